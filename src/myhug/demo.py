"""`myhug demo`: a first run on embedded defaults, with nothing to configure.

It creates a fresh data dir (SQLite, local keys, SMS to a file), registers a
DPI client and demo physicians, records consents, activates the accounts the
way a first login does, starts the gateway, submits sample documents over
SMTP with STARTTLS + AUTH, and prints what happened.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import select

from myhug.audit.trail import verify
from myhug.components import Components
from myhug.config.settings import Settings
from myhug.crypto.openpgp import stop_agent
from myhug.datadir import init_data_dir
from myhug.delivery.models import Delivery
from myhug.delivery.queue import PENDING_STATES
from myhug.delivery.receipts import receipts_outstanding
from myhug.directory.identifiers import make_gln
from myhug.directory.service import (
    HinIdentity,
    activate_hin_identity,
    activate_with_password,
    add_dpi_client,
    hosted_address,
    register_physician,
    set_consent,
)
from myhug.dpi_client import Attachment, build_submission, sample_pdf, submit
from myhug.errors import MyhugError
from myhug.hin.keys import import_recipient_key
from myhug.supervisor import start

log = logging.getLogger(__name__)

DEMO_MARKER = ".myhug-demo"
HIN_KEY_PARAMS = """%no-protection
Key-Type: eddsa
Key-Curve: ed25519
Key-Usage: sign
Subkey-Type: ecdh
Subkey-Curve: cv25519
Subkey-Usage: encrypt
Name-Real: Hans Mueller
Name-Email: hans.mueller@hin.ch
Expire-Date: 1y
%commit
"""
DEMO_PASSWORD = "Demo-myHUG-2026"
DPI_SENDER = "dpi@hug.localhost"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare_dir(data_dir: Path) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / DEMO_MARKER).exists():
            raise MyhugError(f"{data_dir} exists and is not a demo data dir; choose another --data-dir")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, mode=0o700)
    (data_dir / DEMO_MARKER).write_text("created by `myhug demo`; deleted and recreated at each demo run\n")


class MailDrop:
    """Plays a mail server of the demo (the HIN relay, the DPI's mail server): files what it receives."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        count = len(list(self.folder.glob("*.eml"))) + 1
        (self.folder / f"{count:03d}.eml").write_bytes(envelope.original_content)  # type: ignore[attr-defined]
        return "250 2.0.0 filed"


def _demo_hin_key(data_dir: Path) -> tuple[Path, bytes]:
    """A key pair for the demo's HIN physician, in a GnuPG home of his own (his mail client's)."""
    home = data_dir / "hin-physician-gnupg"
    if len(str(home)) > 60:
        # gpg-agent's socket lives in the home and Unix socket paths are limited to ~107 bytes.
        home = Path(tempfile.mkdtemp(prefix="myhug-hin-gnupg-"))
    home.mkdir(mode=0o700, exist_ok=True)
    params = home / "key-params"
    params.write_text(HIN_KEY_PARAMS)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    subprocess.run([*gpg, "--gen-key", str(params)], check=True, capture_output=True, timeout=120)
    public = subprocess.run([*gpg, "--export", "--armor", "hans.mueller@hin.ch"], check=True, capture_output=True,
                            timeout=60).stdout
    stop_agent(home)  # started by the key generation; the printed decrypt command starts its own
    return home, public


def _pin_gateway_key(gateway: Components, home: Path) -> None:
    """Dr Müller pins the gateway's signing key (`myhug key export-gateway`), so his client verifies the sender."""
    pgp = gateway.openpgp()
    public = pgp.export_public(pgp.signing_key(gateway.settings.mail.receipts_address))
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import"], input=public.encode(), check=True,
                   capture_output=True, timeout=60)
    stop_agent(home)  # an import may start one too; the printed decrypt command starts its own


def _start_drop(folder: Path, settings: Settings) -> tuple[Controller, str]:
    """A loopback SMTP server with STARTTLS, using the gateway's own certificate (trusted via relay.ca_file)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    port = _free_port()
    controller = Controller(MailDrop(folder), hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True)
    controller.start()
    return controller, f"127.0.0.1:{port}"


def run_demo(data_dir: Path | None, keep_serving: bool = True) -> None:
    """Run the demo; with `keep_serving`, stay up until Ctrl-C so the newcomer can look around."""
    data_dir = (data_dir or Path("myhug-demo")).resolve()
    _prepare_dir(data_dir)
    settings = init_data_dir(
        data_dir, smtp_listen=f"127.0.0.1:{_free_port()}", web_listen=f"127.0.0.1:{_free_port()}",
        inbound_listen=f"127.0.0.1:{_free_port()}",
    )
    # The HIN relay and the DPI's mail server are played by local mail drops (folders of .eml files).
    hin_drop, settings.relay.hin_smarthost = _start_drop(data_dir / "hin-mailbox", settings)
    dpi_drop, settings.relay.dpi_smarthost = _start_drop(data_dir / "dpi-receipts", settings)
    settings.relay.ca_file = str(settings.tls_cert_file)
    gateway = Components.from_settings(settings)
    try:
        asyncio.run(_demo(gateway, keep_serving))
    finally:
        gateway.close()
        hin_drop.stop()
        dpi_drop.stop()
        stop_agent(settings.gnupg_home)  # the gateway's own agent, as `myhug serve` stops it


async def _demo(gateway: Components, keep_serving: bool) -> None:
    settings = gateway.settings
    domain = settings.mail.domain
    print(f"== myHUG gateway demo — data dir {settings.data_dir}")

    with gateway.db.transaction() as session:
        dpi = add_dpi_client(session, "dpi-demo", actor="demo")
        dupont = register_physician(
            session, gln=make_gln("760100000001"), given_name="Marie", family_name="Dupont",
            mobile="+41 79 123 45 67", email="marie.dupont@example.ch", specialties=["1014"], actor="demo",
        )
        favre = register_physician(
            session, gln=make_gln("760100000002"), given_name="Luc", family_name="Favre",
            mobile="+41 78 765 43 21", specialties=["1006"], actor="demo",
        )
        # The same operations the webmail runs at a first login.
        activate_with_password(session, dupont.physician, dupont.temporary_password or "", DEMO_PASSWORD)
        mueller = activate_hin_identity(
            session,
            HinIdentity(login_name="hmueller", gln=make_gln("760100000003"), mail="hans.mueller@hin.ch",
                        given_name="Hans", surname="Müller"),
        )
        for patient, physician in (("P-1001", dupont.physician), ("P-1002", dupont.physician), ("P-1001", mueller)):
            set_consent(session, gateway.sealer.patient_ref(patient), physician, granted=True, actor="demo")
        hin_home, hin_public_key = _demo_hin_key(settings.data_dir)
        import_recipient_key(session, gateway.openpgp(), hin_public_key)
        _pin_gateway_key(gateway, hin_home)
        dupont_address = hosted_address(dupont.physician, domain) or ""
        favre_address = hosted_address(favre.physician, domain) or ""

    print("DPI client 'dpi-demo' created (SMTP AUTH + API token).")
    print(f"Physicians: Dr Marie Dupont <{dupont_address}> (SMS mode, activated),")
    print(f"            Dr Luc Favre <{favre_address}> (SMS mode, NOT activated yet),")
    print("            Dr Hans Müller <hans.mueller@hin.ch> (HIN identity, activated, OpenPGP key imported).")
    print("Consents: patient P-1001 -> Dupont and Müller; P-1002 -> Dupont.")

    running = await start(gateway, ("smtp", "worker", "web"))
    try:
        assert running.smtp_address is not None and running.web_address is not None
        host, port = running.smtp_address
        cases = [
            ("lettre de sortie, P-1001 -> Dupont", dupont_address, "P-1001", "DOC-1001-A", "discharge-letter"),
            ("rapport de laboratoire, P-1002 -> Dupont", dupont_address, "P-1002", "DOC-1002-A", "lab-report"),
            ("same document again (idempotent)", dupont_address, "P-1001", "DOC-1001-A", "discharge-letter"),
            ("lettre de sortie, P-1001 -> Müller (HIN)", "hans.mueller@hin.ch", "P-1001", "DOC-1001-B", "discharge-letter"),
            ("P-1002 -> Favre (not activated)", favre_address, "P-1002", "DOC-1002-B", "lab-report"),
            ("P-9999 -> Dupont (no consent)", dupont_address, "P-9999", "DOC-9999-A", "lab-report"),
        ]
        print(f"\n== Submitting over SMTP (STARTTLS + AUTH) to {host}:{port}")
        for label, rcpt, patient, doc_id, doc_type in cases:
            message = build_submission(
                sender=DPI_SENDER, recipients=[rcpt], patient_id=patient, document_id=doc_id,
                patient_name="Patient Démo", patient_birthdate="1950-01-31", document_type=doc_type,
                subject=f"Document {doc_id}",
                attachments=[Attachment(f"{doc_id}.pdf", sample_pdf(f"myHUG demo {doc_id}"))],
            )
            reply = await submit(message, host=host, port=port, username=dpi.username, password=dpi.password,
                                 cafile=str(settings.tls_cert_file))
            print(f"  {label:<45} -> {reply.code} {reply.text}")

        await _wait_settled(gateway)
        await _wait_receipts(gateway)
        print("\n== Deliveries")
        with gateway.db.transaction() as session:
            for d in session.scalars(select(Delivery).order_by(Delivery.created_at)):
                print(f"  {d.id}  {d.document_id:<12} {d.route:<7} {d.state:<10} -> {d.recipient_address}")
            result = verify(session)
        print(f"\n== Audit chain: {'OK' if result.ok else 'BROKEN'}, {result.checked} events")
        receipts = sorted((settings.data_dir / "dpi-receipts").glob("*.eml"))
        hin_mail = sorted((settings.data_dir / "hin-mailbox").glob("*.eml"))
        print(f"\n== The DPI received {len(receipts)} receipts (multipart/report + FHIR AuditEvent) in {settings.data_dir / 'dpi-receipts'}")
        if hin_mail:
            print(f"== Dr Müller's HIN mailbox got {hin_mail[-1]} (PGP/MIME, DKIM-signed); his mail client would run:")
            print(f"     gpg --homedir {hin_home} --decrypt {hin_mail[-1]}")
            print("   It is signed inside the encryption by the gateway's key, which he pinned from")
            print("   `myhug key export-gateway`: gpg says \"Good signature from myHUG gateway\".")
        web_host, web_port = running.web_address
        print("\n== Next: read the documents in the webmail")
        print(f"  1. Open http://{web_host}:{web_port}/login")
        print(f"  2. Log in as {dupont.physician.login} with password {DEMO_PASSWORD}")
        print(f"  3. The SMS code is the last line of {settings.sms_outbox}")
        print(f"     (tail -n1 {settings.sms_outbox})")
        print("\n== The DPI's side (API)")
        print(f"  curl -s -H 'Authorization: Bearer {dpi.api_token}' \\")
        print(f"       'http://{web_host}:{web_port}/api/v1/practitioners?name=dupont'")
        print(f"  curl -s -H 'Authorization: Bearer {dpi.api_token}' http://{web_host}:{web_port}/api/v1/documents/DOC-1001-A")
        print(f"  OpenAPI:         http://{web_host}:{web_port}/api/openapi.json")
        print(f"  Health:          http://{web_host}:{web_port}/healthz")
        print(f"  Queue:           myhug queue list --data-dir {settings.data_dir}")
        print(f"  Audit:           myhug audit verify --data-dir {settings.data_dir}")
        if keep_serving:
            print("\nThe gateway keeps running; press Ctrl-C to stop.", flush=True)
            await asyncio.Event().wait()
    finally:
        await running.stop()


async def _wait_receipts(gateway: Components, timeout: float = 30) -> None:
    """Wait until the receipts owed to the DPI so far have gone out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with gateway.db.reading() as session:
            if not receipts_outstanding(session):
                return
        await asyncio.sleep(0.1)


async def _wait_settled(gateway: Components, timeout: float = 30) -> None:
    """Wait until no delivery is pending any more (the worker runs in this process)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with gateway.db.transaction() as session:
            pending = session.scalar(select(Delivery.id).where(Delivery.state.in_(PENDING_STATES)).limit(1))
        if pending is None:
            return
        await asyncio.sleep(0.1)
    raise MyhugError("demo deliveries did not settle in time; see the log above")
