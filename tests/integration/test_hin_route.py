"""The HIN route end to end over loopback: PGP/MIME, DKIM, TLS relay, DSN/MDN, receipts to the DPI."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import subprocess
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from sqlalchemy import select

from myhug.audit.models import AuditEvent
from myhug.components import Components
from myhug.crypto.keys import dkim_dns_record
from myhug.delivery.models import Delivery, Receipt
from myhug.directory.service import DpiCredentials
from myhug.hin.keys import import_recipient_key
from myhug.mailbox.models import MailboxItem
from myhug.supervisor import Running, start
from tests.conftest import CertificateAuthority, Directory, Doctor, MailSink, start_sink
from tests.helpers import PDF, eventually, message, send
from tests.helpers import dsn_report as _dsn
from tests.helpers import mdn_report as _mdn
from tests.pgp_keys import Keypair, make_keypair

PATIENT_DATA = ("Jean", "Exemple", "P-1001", "1950-01-31", "Lettre de sortie", "lettre.pdf")


def import_key(gateway: Components, keypair: Keypair, domain: str | None = None) -> None:
    with gateway.db.transaction() as session:
        import_recipient_key(session, gateway.openpgp(), keypair.public, domain=domain)


def delivery(gateway: Components) -> Delivery:
    with gateway.db.transaction() as session:
        return session.scalars(select(Delivery)).one()


def state(gateway: Components) -> str:
    return delivery(gateway).state


async def submit(running: Running, gateway: Components, dpi: DpiCredentials, doctor: Doctor, document: str = "DOC-1") -> None:
    code, text = await send(running, gateway, (dpi.username, dpi.password), message([doctor.address], document=document),
                            [doctor.address])
    assert code == 250, text


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


async def test_hin_document_is_pgp_mime_decryptable_by_the_physician_with_the_exact_bytes(
    hin_relay: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path: Path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    keypair = make_keypair(tmp_path / "physician", doctor.address)
    import_key(gateway, keypair)
    await submit(running, gateway, dpi, doctor)
    await eventually(lambda: state(gateway) == "relayed", what="relayed")
    [(sender, rcpts, raw)] = hin_relay.messages
    assert rcpts == [doctor.address] and sender == f"receipts@{gateway.settings.mail.domain}"
    outer = parse(raw)
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    assert outer["Subject"] == "Document médical confidentiel"
    assert outer["Disposition-Notification-To"] == f"receipts@{gateway.settings.mail.domain}"
    assert outer["Message-ID"] == delivery(gateway).message_id
    control, payload = outer.iter_parts()
    assert control.get_content_type() == "application/pgp-encrypted" and b"Version: 1" in control.get_payload(decode=True)
    # Nothing about the patient or the document outside the encryption.
    headers = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert "X-MyHUG" not in headers
    plain_parts = raw.replace(payload.get_payload(decode=True) or b"", b"").decode(errors="replace")
    for secret in PATIENT_DATA:
        assert secret not in plain_parts, secret
    # The physician pins the gateway's key (`myhug key export-gateway`) and decrypts with the gpg command line:
    # the message is signed inside the encryption (RFC 3156 §6.2) by that key.
    pgp = gateway.openpgp()
    gateway_key = pgp.signing_key(gateway.settings.mail.receipts_address)
    keypair.pin(pgp.export_public(gateway_key).encode())
    plaintext, signer = keypair.decrypt_and_verify(payload.get_payload(decode=True) or b"")
    assert signer == gateway_key
    inner = parse(plaintext)
    assert inner["Subject"] == "Lettre de sortie de Jean Exemple"  # protected header
    assert inner.get_param("protected-headers") == "v1"
    text_part, attachment = list(inner.iter_parts())
    assert "Jean Exemple" in text_part.get_content() and "P-1001" in text_part.get_content()
    assert attachment.get_filename() == "lettre.pdf" and attachment.get_payload(decode=True) == PDF
    # DSN was requested, matched back by ENVID.
    mail_options, rcpt_options = hin_relay.envelopes[0]
    assert f"ENVID={delivery(gateway).id}" in mail_options and "RET=HDRS" in mail_options
    assert any(o.startswith("NOTIFY=") for o in rcpt_options)


async def test_a_document_larger_than_the_in_memory_spool_arrives_whole_signed_and_sized(
    hin_relay: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path: Path
) -> None:
    # 3 MB: the message body goes to the spool's temporary file and is written to the relay in pieces.
    import os

    from myhug.dpi_client import Attachment
    from myhug.mail.mime import SpooledMessage

    data = os.urandom(3_000_000)
    assert len(data) > SpooledMessage.IN_MEMORY
    doctor = directory.hin(consents=("P-1001",))
    keypair = make_keypair(tmp_path / "physician", doctor.address)
    import_key(gateway, keypair)
    code, text = await send(running, gateway, (dpi.username, dpi.password),
                            message([doctor.address], attachments=[Attachment("scanner.bin", data)]), [doctor.address])
    assert code == 250, text
    await eventually(lambda: state(gateway) == "relayed", what="relayed", timeout=60)
    [(_, _, raw)] = hin_relay.messages
    dnsfunc, _ = _dns_for(gateway)
    assert dkim.verify(raw, dnsfunc=dnsfunc)
    mail_options, _ = hin_relay.envelopes[0]
    assert f"SIZE={len(raw)}" in mail_options  # RFC 1870: the octets sent, before dot-stuffing
    _, payload = parse(raw).iter_parts()
    pgp = gateway.openpgp()
    keypair.pin(pgp.export_public(pgp.signing_key(gateway.settings.mail.receipts_address)).encode())
    plaintext, _ = keypair.decrypt_and_verify(payload.get_payload(decode=True) or b"")
    _, attachment = parse(plaintext).iter_parts()
    assert attachment.get_filename() == "scanner.bin" and attachment.get_payload(decode=True) == data


def _dns_for(gateway: Components):  # type: ignore[no-untyped-def]
    record = dkim_dns_record(gateway.settings.dkim_key_file).encode()
    expected = f"{gateway.settings.mail.dkim_selector}._domainkey.{gateway.settings.mail.domain}.".encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record if name == expected else b""

    return dnsfunc, record


PERL_VERIFY = r'''
use strict; use warnings;
use Mail::DKIM::Verifier;
my ($name, $record) = @ARGV;
no warnings 'redefine';
# An offline DNS: the one TXT record the gateway publishes.
*Mail::DKIM::DNS::query = sub {
    my ($domain, $type) = @_;
    return () unless lc($domain) eq lc($name) && $type eq 'TXT';
    my $rr = Net::DNS::RR->new(name => $domain, type => 'TXT', txtdata => $record);
    return ($rr);
};
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (<STDIN>) { $dkim->PRINT($_); }
$dkim->CLOSE;
print $dkim->result, "\n";
'''


async def test_dkim_verifies_with_dkimpy_and_with_perl_mail_dkim(
    hin_relay: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path: Path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    import_key(gateway, make_keypair(tmp_path / "physician", doctor.address))
    await submit(running, gateway, dpi, doctor)
    await eventually(lambda: len(hin_relay.messages) == 1, what="relayed message")
    raw = hin_relay.messages[0][2]
    assert raw.startswith(b"DKIM-Signature:") and b" l=" not in raw.split(b"\r\n\r\n")[0]
    dnsfunc, record = _dns_for(gateway)
    assert dkim.verify(raw, dnsfunc=dnsfunc)
    tampered = raw.replace(b"Version: 1", b"Version: 2", 1)
    assert tampered != raw and not dkim.verify(tampered, dnsfunc=dnsfunc)
    name = f"{gateway.settings.mail.dkim_selector}._domainkey.{gateway.settings.mail.domain}"
    script = tmp_path / "verify.pl"
    script.write_text(PERL_VERIFY)
    result = subprocess.run(["perl", str(script), name, record.decode()], input=raw, capture_output=True, timeout=60)
    assert result.stdout.decode().strip() == "pass", result.stderr.decode()


async def test_relay_down_defers_then_delivers_when_back(
    gateway: Components, dpi: DpiCredentials, directory: Directory, test_ca: CertificateAuthority, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    port = free_port()
    gateway.settings.relay.hin_smarthost = f"127.0.0.1:{port}"  # nothing listens yet
    doctor = directory.hin(consents=("P-1001",))
    import_key(gateway, make_keypair(tmp_path / "physician", doctor.address))
    run = await start(gateway, ("smtp", "worker"))
    try:
        await submit(run, gateway, dpi, doctor)
        await eventually(lambda: state(gateway) == "deferred", what="deferred")
        assert "relay unreachable" in (delivery(gateway).last_error or "")
        sink, controller, _ = start_sink(test_ca.server_context(), port=port)
        try:
            gateway.queue().retry(delivery(gateway).id)  # as `myhug queue retry` does
            assert run.worker is not None
            run.worker.wake()
            await eventually(lambda: state(gateway) == "relayed", what="relayed after the relay is back")
            assert len(sink.messages) == 1
        finally:
            controller.stop()  # type: ignore[attr-defined]
    finally:
        await run.stop()
    with gateway.db.transaction() as session:
        events = [e.event for e in session.scalars(select(AuditEvent).where(AuditEvent.delivery_id.is_not(None)))]
    assert events == ["accepted", "deferred", "relayed"]


async def test_relay_5xx_fails_and_the_dpi_gets_a_failed_receipt(
    hin_relay: MailSink, dpi_mail: MailSink, running: Running, gateway: Components, dpi: DpiCredentials,
    directory: Directory, tmp_path: Path
) -> None:
    hin_relay.reply = "554 5.7.1 Message refused by policy"
    doctor = directory.hin(consents=("P-1001",))
    import_key(gateway, make_keypair(tmp_path / "physician", doctor.address))
    await submit(running, gateway, dpi, doctor)
    await eventually(lambda: state(gateway) == "failed", what="failed")
    assert "554" in (delivery(gateway).last_error or "")
    await eventually(lambda: any(parse(m[2])["X-MyHUG-Event"] == "failed" for m in dpi_mail.messages), what="failed receipt")


async def test_untrusted_certificate_or_no_starttls_sends_nothing_and_defers(
    gateway: Components, dpi: DpiCredentials, directory: Directory, test_ca: CertificateAuthority, tmp_path: Path
) -> None:
    from tests.conftest import CertificateAuthority as OtherCA

    doctor = directory.hin(consents=("P-1001",))
    import_key(gateway, make_keypair(tmp_path / "physician", doctor.address))
    rogue_dir = tmp_path / "rogue"
    rogue_dir.mkdir()
    rogue, rogue_controller, rogue_port = start_sink(OtherCA(rogue_dir).server_context())
    plain, plain_controller, plain_port = start_sink(None, offer_tls=False)
    try:
        for port, sink, name in ((rogue_port, rogue, "untrusted certificate"), (plain_port, plain, "no STARTTLS")):
            gateway.settings.relay.hin_smarthost = f"127.0.0.1:{port}"
            run = await start(gateway, ("smtp", "worker"))
            try:
                document = f"DOC-{port}"
                await submit(run, gateway, dpi, doctor, document=document)
                await eventually(lambda doc=document: _state_of(gateway, doc) == "deferred", what=f"deferred ({name})")
            finally:
                await run.stop()
            assert sink.messages == [], name
    finally:
        rogue_controller.stop()  # type: ignore[attr-defined]
        plain_controller.stop()  # type: ignore[attr-defined]


def _state_of(gateway: Components, document: str) -> str:
    with gateway.db.transaction() as session:
        return session.scalars(select(Delivery.state).where(Delivery.document_id == document)).one()


async def relayed_to_a_hin_physician(running: Running, gateway: Components, dpi: DpiCredentials,
                                     directory: Directory, tmp_path: Path) -> tuple[Doctor, Delivery]:
    """A HIN physician with a key, one document submitted for them and relayed: the start of each report test."""
    doctor = directory.hin(consents=("P-1001",))
    import_key(gateway, make_keypair(tmp_path / "physician", doctor.address))
    await submit(running, gateway, dpi, doctor)
    await eventually(lambda: state(gateway) == "relayed", what="relayed")
    return doctor, delivery(gateway)


async def _inbound(running: Running, raw: bytes, rcpt: str = "receipts@myhug.localhost",
                   source: str | None = None) -> tuple[int, str]:
    import aiosmtplib

    assert running.inbound_address is not None
    client = aiosmtplib.SMTP(hostname=running.inbound_address[0], port=running.inbound_address[1], start_tls=False,
                             source_address=(source, 0) if source else None)
    await client.connect()
    try:
        await client.ehlo()
        assert client.supports_extension("starttls")
        await client.mail("")
        code, text = (await client.rcpt(rcpt))
        response = await client.data(raw)
        return response.code, response.message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        client.close()


async def test_dsn_and_mdn_intake_with_a_forged_mdn_changing_nothing(
    hin_relay: MailSink, dpi_mail: MailSink, running: Running, gateway: Components, dpi: DpiCredentials,
    directory: Directory, tmp_path: Path
) -> None:
    doctor, d = await relayed_to_a_hin_physician(running, gateway, dpi, directory, tmp_path)

    # Relaying is refused; only receipt addresses are accepted.
    assert (await _inbound(running, b"Subject: x\r\n\r\nx\r\n", rcpt="someone@example.org"))[0] == 550
    # Unmatched and forged reports are accepted and change nothing.
    assert (await _inbound(running, _dsn("NOSUCHENVID", doctor.address, "delivered", "2.0.0")))[0] == 250
    assert (await _inbound(running, _dsn(d.id, "other@hin.ch", "delivered", "2.0.0")))[0] == 250
    assert state(gateway) == "relayed"
    code, _ = await _inbound(running, _mdn(d.message_id or "", "mallory@hin.ch", doctor.address))
    assert code == 250 and state(gateway) == "relayed"
    assert (await _inbound(running, b"Subject: hello\r\n\r\nnot a report\r\n"))[0] == 554

    assert (await _inbound(running, _dsn(d.id, doctor.address, "delivered", "2.0.0")))[0] == 250
    assert state(gateway) == "delivered"
    assert (await _inbound(running, _mdn(d.message_id or "", doctor.address, doctor.address)))[0] == 250
    assert state(gateway) == "read"
    with gateway.db.transaction() as session:
        events = [e.event for e in session.scalars(select(AuditEvent).where(AuditEvent.delivery_id == d.id))]
    assert events == ["accepted", "relayed", "delivered", "read"]
    # The DPI holds a parsable receipt for every state the document passed through.
    await eventually(lambda: len(dpi_mail.messages) == 4, what="four receipts")
    seen = []
    for sender, rcpts, raw in dpi_mail.messages:
        receipt = parse(raw)
        assert sender in ("", "<>") and rcpts == ["dpi@hug.localhost"]  # MAIL FROM:<>
        assert receipt.get_content_type() == "multipart/report"
        assert receipt["X-MyHUG-Document-Id"] == "DOC-1"
        event = receipt["X-MyHUG-Event"]
        seen.append(event)
        parts = {p.get_content_type(): p for p in receipt.iter_parts()}
        fhir = json.loads(parts["application/fhir+json"].get_content())
        assert fhir["resourceType"] == "AuditEvent" and fhir["subtype"][0]["code"] == event
        if event in ("relayed", "delivered"):
            assert receipt.get_param("report-type") == "delivery-status"
            dsn_text = parts["message/delivery-status"].as_string()
            assert f"Final-Recipient: rfc822; {doctor.address}" in dsn_text
        for secret in PATIENT_DATA[:4]:
            assert secret not in raw.decode(errors="replace")
        dnsfunc, _ = _dns_for(gateway)
        assert dkim.verify(raw, dnsfunc=dnsfunc)
    assert sorted(seen) == sorted(["accepted", "relayed", "delivered", "read"])

    def all_sent() -> bool:  # the sender records "sent" just after the relay took the last one
        with gateway.db.reading() as session:
            return {r.state for r in session.scalars(select(Receipt))} == {"sent"}

    await eventually(all_sent, what="every receipt marked sent")


async def test_expired_key_falls_back_to_the_hosted_mailbox_by_default(
    hin_relay: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path: Path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    import_key(gateway, make_keypair(tmp_path / "physician", doctor.address, expire="2d"))
    # Two days pass for gpg: the pinned key has expired by the time the document comes.
    assert running.worker is not None
    agent = running.worker.agents["hin"]
    agent.pgp.gpg.options = [*(agent.pgp.gpg.options or []), "--faked-system-time", "20990101T000000"]  # type: ignore[attr-defined]
    await submit(running, gateway, dpi, doctor)
    await eventually(lambda: state(gateway) == "deposited", what="hosted fallback")
    assert hin_relay.messages == []
    with gateway.db.transaction() as session:
        deposited = session.scalars(select(AuditEvent).where(AuditEvent.event == "deposited")).one()
        assert "no usable OpenPGP key" in deposited.detail and "expired" in deposited.detail
        assert session.scalars(select(MailboxItem)).one().physician_id == doctor.id
    assert delivery(gateway).route == "hosted"


async def test_no_key_with_hold_policy_holds_and_domain_key_is_the_fallback(
    gateway: Components, dpi: DpiCredentials, directory: Directory, hin_relay: MailSink, tmp_path: Path
) -> None:
    gateway.settings.relay.no_key_policy = "hold"
    doctor = directory.hin(consents=("P-1001",))
    run = await start(gateway, ("smtp", "worker"))
    try:
        await submit(run, gateway, dpi, doctor, document="DOC-HOLD")
        await eventually(lambda: _state_of(gateway, "DOC-HOLD") == "held", what="held")
        assert hin_relay.messages == []
        domain_key = make_keypair(tmp_path / "hin-gateway", "gateway@hin.ch")
        import_key(gateway, domain_key, domain="hin.ch")
        await submit(run, gateway, dpi, doctor, document="DOC-DOMAIN")
        await eventually(lambda: _state_of(gateway, "DOC-DOMAIN") == "relayed", what="relayed with the domain key")
    finally:
        await run.stop()
    raw = hin_relay.messages[0][2]
    payload = list(parse(raw).iter_parts())[1].get_payload(decode=True) or b""
    assert parse(domain_key.decrypt(payload)).get_param("protected-headers") == "v1"


async def test_past_the_queue_lifetime_a_deferred_delivery_expires_with_a_receipt(
    dpi_mail: MailSink, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path: Path
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from myhug.db.base import utcnow
    from tests.conftest import free_port

    gateway.settings.relay.hin_smarthost = f"127.0.0.1:{free_port()}"  # the relay never answers
    doctor = directory.hin(consents=("P-1001",))
    import_key(gateway, make_keypair(tmp_path / "physician", doctor.address))
    run = await start(gateway, ("smtp", "worker"))
    try:
        await submit(run, gateway, dpi, doctor)
        await eventually(lambda: state(gateway) == "deferred", what="deferred")
        with gateway.db.transaction() as session:  # five days and a minute later
            session.execute(update(Delivery).values(created_at=utcnow() - timedelta(days=5, minutes=1),
                                                    next_attempt_at=utcnow()))
        assert run.worker is not None
        run.worker.wake()
        await eventually(lambda: state(gateway) == "expired", what="expired")
        await eventually(lambda: any(parse(m[2])["X-MyHUG-Event"] == "expired" for m in dpi_mail.messages),
                         what="expired receipt")
    finally:
        await run.stop()


async def test_a_document_that_can_never_be_built_for_its_route_fails_at_once_with_a_receipt(
    hin_relay: MailSink, dpi_mail: MailSink, gateway: Components, dpi: DpiCredentials, directory: Directory,
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from myhug.gateway.submission import parse_submission
    from tests.helpers import accept_directly

    doctor = directory.hin(consents=("P-1001",))
    import_key(gateway, make_keypair(tmp_path / "k", doctor.address))
    # What an older intake let through: a Subject with a line break, which no mail header can carry.
    parsed = replace(parse_submission(message([doctor.address])), subject="Lettre\r\nBcc: x@evil.example")
    accept_directly(gateway, doctor.address, parsed)
    running = await start(gateway, ("worker",))
    try:
        await eventually(lambda: state(gateway) == "failed", what="failed")
        await eventually(lambda: any(b"X-MyHUG-Event: failed" in raw for _, _, raw in dpi_mail.messages),
                         what="failed receipt")
    finally:
        await running.stop()
    failed = delivery(gateway)
    assert failed.attempts == 1 and "cannot be built" in (failed.last_error or "")
    assert hin_relay.messages == []  # nothing half-built left the gateway


async def test_receipts_only_from_the_hin_relay_and_a_dsn_failure_names_its_reason_in_the_status(
    hin_relay: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory,
    tmp_path: Path,
) -> None:
    import httpx

    from tests.helpers import web_base

    gateway.settings.smtp.inbound_peers = ["127.0.0.1/32"]  # the HIN relay; 127.0.0.2 plays anyone else
    doctor, d = await relayed_to_a_hin_physician(running, gateway, dpi, directory, tmp_path)
    forged = _dsn(d.id, doctor.address, "failed", "5.1.1")
    code, text = await _inbound(running, forged, source="127.0.0.2")
    assert code == 550 and text.startswith("5.7.1"), text
    assert state(gateway) == "relayed"  # an outsider changes nothing
    assert (await _inbound(running, forged))[0] == 250  # the relay's own DSN counts
    assert state(gateway) == "failed"
    async with httpx.AsyncClient(base_url=web_base(running),
                                 headers={"Authorization": f"Bearer {dpi.api_token}"}) as api:
        status = (await api.get("/api/v1/documents/DOC-1")).json()
    [recipient] = status["recipients"]
    assert recipient["state"] == "failed" and "HIN side" in (recipient["last_error"] or ""), recipient


POSTFIX_DSNS = Path(__file__).parents[1] / "fixtures" / "dsn"
# Each fixture as Postfix 3.7.11 wrote it: (its envelope id, its recipient); see fixtures/dsn/generate.sh.
POSTFIX_CASES = {
    "delivered": ("DELIVEREDENVID1", "hmueller@hin.example"),
    "expanded": ("EXPANDEDENVID01", "cabinet@hin.example"),
    "relayed": ("RELAYEDENVID001", "dr.favre@relay.example"),
    "failed": ("FAILEDENVID0001", "nosuchuser@hin.example"),
    "delayed": ("DELAYEDENVID001", "dr.weber@down.example"),
}


def postfix_dsn(action: str, envid: str, recipient: str) -> bytes:
    """A DSN generated by a real Postfix, re-addressed to this test's delivery (nothing else changed)."""
    original_envid, original_recipient = POSTFIX_CASES[action]
    raw = (POSTFIX_DSNS / f"postfix-3.7.11-{action}.eml").read_bytes()
    return raw.replace(original_envid.encode(), envid.encode()).replace(original_recipient.encode(), recipient.encode())


@pytest.mark.parametrize(("action", "status", "final_state", "event"), [
    ("delivered", "2.0.0", "delivered", "delivered"),
    ("relayed", "2.0.0", "delivered", "delivered"),  # handed on to a system that reports no further
    ("expanded", "2.0.0", "delivered", "delivered"),  # an alias delivered to its members
    ("delayed", "4.4.1", "relayed", "deferred"),  # recorded, the state unchanged
    ("failed", "5.1.1", "failed", "failed"),
])
async def test_every_dsn_action_as_postfix_sends_it(
    hin_relay: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory,
    tmp_path: Path, action: str, status: str, final_state: str, event: str,
) -> None:
    doctor, d = await relayed_to_a_hin_physician(running, gateway, dpi, directory, tmp_path)
    assert (await _inbound(running, postfix_dsn(action, d.id, doctor.address)))[0] == 250
    assert state(gateway) == final_state
    with gateway.db.reading() as session:
        events = [(e.event, json.loads(e.detail)) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.delivery_id == d.id).order_by(AuditEvent.seq))]
    assert events[-1][0] == event and events[-1][1].get("status") == status
    assert events[-1][1].get("dkim") == "none"  # Postfix does not sign its reports; recorded as such


async def test_the_dkim_result_of_a_signed_report_is_recorded_on_its_event(
    hin_relay: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory,
    tmp_path: Path,
) -> None:
    from myhug.crypto.dkim import DkimSigner
    from myhug.crypto.keys import create_dkim_key, dkim_dns_record
    from myhug.gateway.inbound import ReceiptIntake

    doctor, d = await relayed_to_a_hin_physician(running, gateway, dpi, directory, tmp_path)
    hin_key = tmp_path / "hin-dkim.pem"
    create_dkim_key(hin_key)
    records = {b"mail._domainkey.hin.example.": dkim_dns_record(hin_key).encode()}
    intake = ReceiptIntake(gateway.db, gateway.settings, dkim_dns=lambda name, timeout=5: records.get(name))
    signed = DkimSigner(hin_key, "hin.example", "mail").sign(postfix_dsn("delayed", d.id, doctor.address))
    assert intake.apply(signed).event == "deferred"
    tampered = DkimSigner(hin_key, "hin.example", "mail").sign(postfix_dsn("delivered", d.id, doctor.address))
    tampered = tampered.replace(b"Status: 2.0.0", b"Status: 2.0.1")
    assert intake.apply(tampered).event == "delivered"  # recorded, not enforced: inbound_peers is the gate
    with gateway.db.reading() as session:
        details = [json.loads(e.detail) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.delivery_id == d.id).order_by(AuditEvent.seq))]
    assert [x.get("dkim") for x in details[-2:]] == ["pass d=hin.example", "fail d=hin.example"]


async def test_an_rfc8098_read_receipt_sent_by_swaks_marks_the_document_read(
    hin_relay: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory,
    tmp_path: Path,
) -> None:
    """swaks, a real SMTP client, plays the physician's mail client sending its MDN through the HIN relay."""
    doctor, d = await relayed_to_a_hin_physician(running, gateway, dpi, directory, tmp_path)
    mdn = tmp_path / "mdn.eml"
    mdn.write_bytes(_mdn(d.message_id or "", doctor.address, doctor.address))
    assert running.inbound_address is not None
    host, port = running.inbound_address
    sent = await asyncio.to_thread(
        subprocess.run, ["swaks", "--server", f"{host}:{port}", "--from", "", "--to", "receipts@myhug.localhost",
                         "--data", str(mdn), "--hide-all"], capture_output=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert state(gateway) == "read"
