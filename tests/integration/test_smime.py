"""S/MIME as the HIN route's second envelope, end to end over loopback, opened by real peers: `openssl cms` and
`gpgsm` decrypt it and verify the gateway's signature, the PDF is byte-equal, DKIM verifies; the envelope
preference decides between a key and a certificate; a bad certificate sends nothing."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import subprocess
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from sqlalchemy import select

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.crypto.keys import dkim_dns_record
from myhug.crypto.openpgp import KeyRefused
from myhug.crypto.smime import gateway_identity
from myhug.delivery.models import Delivery
from myhug.directory.service import DpiCredentials
from myhug.hin.keys import import_recipient_key
from myhug.hin.models import RecipientKey
from myhug.supervisor import Running
from tests.conftest import CertificateAuthority, Directory, Doctor, MailSink
from tests.helpers import PDF, eventually, message, send
from tests.integration.test_hin_route import PATIENT_DATA, import_key, state
from tests.pgp_keys import make_keypair
from tests.smime_certs import Issued, SmimeCa


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.fixture
def smime_ca(tmp_path: Path, settings: Settings) -> SmimeCa:
    ca = SmimeCa(tmp_path / "smime-ca")
    settings.crypto.smime_ca_file = str(ca.cert_file)
    return ca


def pin(gateway: Components, issued: Issued, domain: str | None = None) -> RecipientKey:
    with gateway.db.transaction() as session:
        return import_recipient_key(session, gateway.openpgp(), issued.cert_pem, domain=domain,
                                    smime_ca_file=gateway.settings.crypto.smime_ca_file)


async def submit(running: Running, gateway: Components, dpi: DpiCredentials, doctor: Doctor,
                 document: str = "DOC-1") -> None:
    code, text = await send(running, gateway, (dpi.username, dpi.password),
                            message([doctor.address], document=document), [doctor.address])
    assert code == 250, text


def openssl(*args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


async def test_a_physician_with_a_certificate_gets_s_mime_that_openssl_and_gpgsm_open(
    hin_relay: MailSink, running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials,
    directory: Directory, smime_ca: SmimeCa, tmp_path: Path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    issued = smime_ca.issue(doctor.address, name="physician")
    key = pin(gateway, issued)
    assert key.envelope == "smime" and key.kind == "personal"
    await submit(running, gateway, dpi, doctor)
    await eventually(lambda: state(gateway) == "relayed", what="relayed")
    [(_, rcpts, raw)] = hin_relay.messages
    assert rcpts == [doctor.address]
    outer = parse(raw)
    assert outer.get_content_type() == "application/pkcs7-mime"
    assert outer.get_param("smime-type") == "enveloped-data" and outer["Subject"] == "Document médical confidentiel"
    der = outer.get_payload(decode=True) or b""
    outside = raw.replace(b"".join(raw.split(b"\r\n\r\n", 1)[1:]), b"").decode()
    for secret in PATIENT_DATA:
        assert secret not in outside and secret.encode() not in der, secret  # nothing in clear, inside or out
    record = dkim_dns_record(settings.dkim_key_file).encode()
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record)

    # openssl cms: decrypt with the physician's key, verify the gateway's signature against its pinned certificate.
    (tmp_path / "message.der").write_bytes(der)
    signed = openssl("cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "message.der"),
                     "-recip", str(issued.cert_file), "-inkey", str(issued.key_file))
    assert b"multipart/signed" in signed.split(b"\r\n\r\n", 1)[0]
    gateway_cert = tmp_path / "gateway.pem"
    gateway_cert.write_text(gateway_identity(settings.smime_dir, settings.mail.receipts_address).pem)
    inner = parse(openssl("cms", "-verify", "-CAfile", str(gateway_cert), data=signed))
    assert inner["Subject"] == "Lettre de sortie de Jean Exemple"
    attachment = next(p for p in inner.iter_parts() if p.get_filename() == "lettre.pdf")
    assert attachment.get_payload(decode=True) == PDF

    # gpgsm, as a physician's GnuPG-based client (NeoMutt's S/MIME backend) runs it.
    home = tmp_path / "gpgsm"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    (home / "gpgsm.conf").write_text("disable-crl-checks\ndisable-policy-checks\n")
    p12 = tmp_path / "physician.p12"
    openssl("pkcs12", "-export", "-in", str(issued.cert_file), "-inkey", str(issued.key_file), "-out", str(p12),
            "-passout", "pass:secret", "-certpbe", "NONE", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1")

    def gpgsm(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["gpgsm", "--batch", "--pinentry-mode", "loopback", *args],
                              input=data, capture_output=True, env=env, check=False, timeout=60)

    for certificate in (smime_ca.cert_file, gateway_cert):
        assert gpgsm("--import", str(certificate)).returncode == 0
    assert gpgsm("--passphrase-fd", "0", "--import", str(p12), data=b"secret\n").returncode == 0
    # The physician trusts the CA and the gateway's pinned certificate (gpgsm's trustlist, as after asking).
    fingerprints = gpgsm("--with-colons", "--fingerprint").stdout.decode()
    trusted = [line.split(":")[9] for line in fingerprints.splitlines() if line.startswith("fpr:")]
    (home / "trustlist.txt").write_text("".join(f"{fp} S relax\n" for fp in trusted))
    decrypted = gpgsm("--passphrase-fd", "0", "--decrypt", str(tmp_path / "message.der"), data=b"secret\n")
    assert decrypted.returncode == 0, decrypted.stderr.decode(errors="replace")
    assert decrypted.stdout.replace(b"\r\n", b"\n") == signed.replace(b"\r\n", b"\n")
    signed_part = parse(decrypted.stdout)
    body, signature = signed_part.iter_parts()
    (tmp_path / "signature.p7s").write_bytes(signature.get_payload(decode=True) or b"")
    content = decrypted.stdout.split(b"\r\n\r\n", 1)[1]
    boundary = signed_part.get_boundary() or ""
    first = content.split(f"--{boundary}\r\n".encode(), 1)[1].split(f"\r\n--{boundary}".encode(), 1)[0]
    (tmp_path / "content.eml").write_bytes(first)
    verified = gpgsm("--verify", str(tmp_path / "signature.p7s"), str(tmp_path / "content.eml"))
    assert verified.returncode == 0 and b"Good signature" in verified.stderr, verified.stderr.decode(errors="replace")


async def test_the_envelope_preference_decides_for_a_physician_with_a_key_and_a_certificate(
    hin_relay: MailSink, running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials,
    directory: Directory, smime_ca: SmimeCa, tmp_path: Path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    import_key(gateway, make_keypair(tmp_path / "physician", doctor.address))
    pin(gateway, smime_ca.issue(doctor.address, name="physician"))
    await submit(running, gateway, dpi, doctor, "DOC-1")
    await eventually(lambda: len(hin_relay.messages) == 1, what="first")
    assert parse(hin_relay.messages[0][2]).get_content_type() == "multipart/encrypted"  # default: OpenPGP first
    settings.relay.envelope_preference = ["smime", "openpgp"]
    settings.crypto.smime_cipher = "aes256-gcm"
    await submit(running, gateway, dpi, doctor, "DOC-2")
    await eventually(lambda: len(hin_relay.messages) == 2, what="second")
    second = parse(hin_relay.messages[1][2])
    assert second.get_content_type() == "application/pkcs7-mime"
    assert second.get_param("smime-type") == "authEnveloped-data"
    (tmp_path / "gcm.der").write_bytes(second.get_payload(decode=True) or b"")
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "gcm.der")).decode()
    assert "id-smime-ct-authEnvelopedData" in printed and "aes-256-gcm" in printed.lower()


async def test_an_expired_or_foreign_certificate_sends_nothing_and_says_why(
    hin_relay: MailSink, running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials,
    directory: Directory, smime_ca: SmimeCa, tmp_path: Path
) -> None:
    settings.relay.no_key_policy = "hold"
    doctor = directory.hin(consents=("P-1001",))
    expired = smime_ca.issue(doctor.address, expired=True, name="expired")
    foreign = SmimeCa(tmp_path / "other-ca", "Another CA").issue(doctor.address, name="foreign")
    sign_only = smime_ca.issue(doctor.address, encrypt=False, name="sign-only")
    for issued, why in ((expired, "expired"), (foreign, "does not chain"), (sign_only, "keyEncipherment")):
        with pytest.raises(KeyRefused, match=why):
            pin(gateway, issued)  # refused at import, with the reason
    # Pinned while valid, expired since (the row as it would be): the delivery is held, with the reason.
    with gateway.db.transaction() as session:
        session.add(RecipientKey(fingerprint="E" * 64, physician_id=doctor.id, address=doctor.address,
                                 kind="personal", public_key=expired.cert_pem.decode(), envelope="smime"))
        session.add(RecipientKey(fingerprint="F" * 64, physician_id=doctor.id, address=doctor.address,
                                 kind="personal", public_key=foreign.cert_pem.decode(), envelope="smime"))
    await submit(running, gateway, dpi, doctor)
    await eventually(lambda: state(gateway) == "held", what="held")
    with gateway.db.transaction() as session:
        held = session.scalars(select(Delivery)).one()
    assert "expired" in (held.last_error or "") and "does not chain" in (held.last_error or "")
    assert hin_relay.messages == []


def test_the_cli_imports_a_certificate_lists_it_and_prints_the_gateway_certificate(
    gateway: Components, settings: Settings, directory: Directory, smime_ca: SmimeCa
) -> None:
    from cryptography import x509

    from tests.helpers import myhug

    doctor = directory.hin()
    issued = smime_ca.issue(doctor.address, name="physician")
    env = {"MYHUG_CRYPTO__SMIME_CA_FILE": str(smime_ca.cert_file)}
    imported = myhug(settings, "key", "import", str(issued.cert_file), env=env).stdout
    assert imported.startswith("imported S/MIME certificate ") and doctor.address in imported
    listed = myhug(settings, "key", "list", env=env).stdout
    assert "personal/smime" in listed and "usable" in listed
    printed = myhug(settings, "key", "export-gateway", "--smime").stdout
    certificate = x509.load_pem_x509_certificate(printed.encode())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [settings.mail.receipts_address]
    assert oct((settings.smime_dir / "gateway.key").stat().st_mode & 0o777) == "0o600"


async def test_a_domain_gateway_certificate_is_the_fallback_as_a_domain_key_is(
    hin_relay: MailSink, running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials,
    directory: Directory, smime_ca: SmimeCa, tmp_path: Path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    gateway_of_hin = smime_ca.issue("smime-gateway@hin.ch", name="hin-gateway")
    with pytest.raises(KeyRefused, match="no address of example.ch"):
        pin(gateway, gateway_of_hin, domain="example.ch")
    assert pin(gateway, gateway_of_hin, domain="hin.ch").kind == "domain"
    await submit(running, gateway, dpi, doctor)
    await eventually(lambda: state(gateway) == "relayed", what="relayed")
    der = parse(hin_relay.messages[0][2]).get_payload(decode=True) or b""
    (tmp_path / "message.der").write_bytes(der)
    signed = openssl("cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "message.der"),
                     "-recip", str(gateway_of_hin.cert_file), "-inkey", str(gateway_of_hin.key_file))
    assert b"multipart/signed" in signed


@pytest.mark.once  # a mail client's side: run on one backend (tests/conftest.py)
@pytest.mark.skipif(not shutil.which("neomutt") or not shutil.which("tmux"), reason="NeoMutt and tmux")
async def test_neomutt_with_gpgsm_opens_the_s_mime_message_in_tmux(
    hin_relay: MailSink, running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials,
    directory: Directory, smime_ca: SmimeCa, tmp_path: Path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    issued = smime_ca.issue(doctor.address, name="physician")
    pin(gateway, issued)
    await submit(running, gateway, dpi, doctor)
    await eventually(lambda: state(gateway) == "relayed", what="relayed")
    raw = hin_relay.messages[0][2]
    # The physician's NeoMutt: GnuPG's gpgsm through GPGME, the key imported, the CA and the gateway trusted.
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    (home / "gpgsm.conf").write_text("disable-crl-checks\ndisable-policy-checks\n")
    env = {**os.environ, "GNUPGHOME": str(home), "TERM": "xterm", "LANG": "C.UTF-8"}
    p12 = tmp_path / "physician.p12"
    openssl("pkcs12", "-export", "-in", str(issued.cert_file), "-inkey", str(issued.key_file), "-out", str(p12),
            "-passout", "pass:", "-certpbe", "NONE", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1")
    gateway_cert = tmp_path / "gateway.pem"
    gateway_cert.write_text(gateway_identity(settings.smime_dir, settings.mail.receipts_address).pem)
    for item in (smime_ca.cert_file, gateway_cert, p12):
        subprocess.run(["gpgsm", "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0", "--import",
                        str(item)], input=b"", env=env, capture_output=True, check=True, timeout=60)
    listing = subprocess.run(["gpgsm", "--with-colons", "--fingerprint"], env=env, capture_output=True, text=True,
                             check=True).stdout
    (home / "trustlist.txt").write_text("".join(f"{line.split(':')[9]} S relax\n" for line in listing.splitlines()
                                                if line.startswith("fpr:")))
    mbox = tmp_path / "inbox"
    mbox.write_bytes(b"From receipts@myhug.localhost Mon Dec  7 10:00:00 2026\n" + raw.replace(b"\r\n", b"\n") + b"\n")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text("set crypt_use_gpgme=yes\nset crypt_verify_sig=yes\nset smime_is_default=yes\n"
                      "set mbox_type=mbox\nset sort=date\nset pager_stop=yes\nset pager_index_lines=0\n"
                      "unset wait_key\nset charset=utf-8\nset allow_ansi=no\n")
    session = f"myhug-neomutt-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "60",
                    f"neomutt -n -F {muttrc} -f {mbox}"], env=env, check=True)
    try:
        screen = ""
        for key in ("", "Enter"):
            if key:
                await asyncio.sleep(1)  # the index is drawn before NeoMutt reads keys
                subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
            for _ in range(60):
                await asyncio.sleep(0.25)
                screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session, "-S", "-200"],
                                        capture_output=True, text=True, check=True).stdout
                if key and "Jean Exemple" in screen:
                    break
                if not key and "Document m" in screen:
                    break
        assert "Patient : Jean Exemple" in screen, screen[-3000:]
        assert "Good signature" in screen or "Bonne signature" in screen, screen[-3000:]
        assert "lettre.pdf" in screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


@pytest.mark.once  # the relay's side: run on one backend (tests/conftest.py)
async def test_through_a_real_postfix_relay_dkim_still_verifies_and_openssl_decrypts(
    hin_relay: MailSink, gateway: Components, settings: Settings, dpi: DpiCredentials,
    directory: Directory, smime_ca: SmimeCa, test_ca: CertificateAuthority, tmp_path: Path
) -> None:
    from myhug.supervisor import start
    from tests.postfix_relay import log, postfix_relay

    doctor = directory.hin(consents=("P-1001",))
    issued = smime_ca.issue(doctor.address, name="physician")
    pin(gateway, issued)
    server = test_ca.ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "relay-cert.pem", tmp_path / "relay-key.pem"
    server.cert_chain_pems[0].write_to_path(str(cert_file))
    server.private_key_pem.write_to_path(str(key_file))
    sink_address = settings.relay.hin_smarthost or ""
    with postfix_relay(sink_address, cert_file, key_file) as (port, postfix_dir):
        settings.relay.hin_smarthost = f"127.0.0.1:{port}"  # the gateway -> Postfix (TLS) -> the sink
        running = await start(gateway, ("smtp", "worker"))
        try:
            await submit(running, gateway, dpi, doctor)
            await eventually(lambda: any(doctor.address in r for _, r, _ in hin_relay.messages), timeout=60,
                             what="through Postfix")
        finally:
            await running.stop()
        postfix_log = log(postfix_dir)
    raw = next(m for _, r, m in hin_relay.messages if doctor.address in r)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"relay.hin.test" in head and b"ESMTPS" in head, postfix_log[-2000:]  # through Postfix, over TLS
    record = dkim_dns_record(settings.dkim_key_file).encode()
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record)  # the signature survives the relay
    (tmp_path / "message.der").write_bytes(parse(raw).get_payload(decode=True) or b"")
    signed = openssl("cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "message.der"),
                     "-recip", str(issued.cert_file), "-inkey", str(issued.key_file))
    attachment = next(p for p in parse(openssl("cms", "-verify", "-noverify", data=signed)).iter_parts()
                      if p.get_filename() == "lettre.pdf")
    assert attachment.get_payload(decode=True) == PDF
