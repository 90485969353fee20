"""Metadata for practice software, end to end: the IHE_XDM.zip and the FHIR Bundle travel inside the HIN
message's encryption (never outside it), pass the published schemas, and the webmail offers the same package."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from sqlalchemy import select, update

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.directory.models import Physician
from myhug.directory.service import DpiCredentials
from myhug.dpi_client import Attachment
from myhug.mailbox.models import MailboxItem
from myhug.supervisor import Running
from tests.conftest import Directory, MailSink
from tests.helpers import PDF, eventually, message, send
from tests.helpers import web_base as base
from tests.integration.test_hin_route import PATIENT_DATA, delivery, import_key, parse, state
from tests.integration.test_webmail import events
from tests.pgp_keys import make_keypair
from tests.webclient import WebClient
from tests.webmail_flow import login_sms
from tests.xdm_check import fhir_problems, metadata_problems

PATIENT_ROOT, SOURCE = "2.16.756.5.30.1.145.3.1", "2.16.756.5.30.1.145.1.1"


def configure(settings: Settings) -> None:
    settings.xdm.patient_id_root, settings.xdm.source_id = PATIENT_ROOT, SOURCE


async def test_the_hin_message_carries_the_xdm_package_and_fhir_inside_the_encryption_only(
    hin_relay: MailSink, running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials,
    directory: Directory, tmp_path: Path
) -> None:
    configure(settings)
    doctor = directory.hin(consents=("P-1001",))
    keypair = make_keypair(tmp_path / "physician", doctor.address)
    import_key(gateway, keypair)
    raw_submission = message([doctor.address], attachments=[Attachment("Résumé de séjour.pdf", PDF)])
    code, text = await send(running, gateway, (dpi.username, dpi.password), raw_submission, [doctor.address])
    assert code == 250, text
    await eventually(lambda: state(gateway) == "relayed", what="relayed")
    [(_, _, raw)] = hin_relay.messages
    outer = parse(raw)
    _, payload = outer.iter_parts()
    encrypted = payload.get_payload(decode=True) or b""
    outside = raw.replace(encrypted, b"").decode(errors="replace")
    for secret in (*PATIENT_DATA, "IHE_XDM", "METADATA", "DocumentReference", PATIENT_ROOT):
        assert secret not in outside, secret  # the metadata stays inside the encryption
    pgp = gateway.openpgp()
    keypair.pin(pgp.export_public(pgp.signing_key(settings.mail.receipts_address)).encode())
    plaintext, _ = keypair.decrypt_and_verify(encrypted)
    parts = {part.get_filename(): part for part in parse(plaintext).iter_parts() if part.get_filename()}
    assert set(parts) == {"Résumé de séjour.pdf", "IHE_XDM.zip", "DocumentReference.fhir.json"}
    package = parts["IHE_XDM.zip"].get_payload(decode=True) or b""
    assert parts["IHE_XDM.zip"].get_content_type() == "application/zip"
    assert metadata_problems(package) == []
    bundle = json.loads(parts["DocumentReference.fhir.json"].get_payload(decode=True) or b"")
    assert parts["DocumentReference.fhir.json"].get_content_type() == "application/fhir+json"
    assert fhir_problems(bundle, package) == []
    reference = bundle["entry"][0]["resource"]
    assert reference["subject"]["identifier"] == {"system": f"urn:oid:{PATIENT_ROOT}", "value": "P-1001"}
    assert reference["content"][0]["attachment"]["title"] == "Résumé de séjour.pdf"
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        assert archive.read("IHE_XDM/SUBSET01/DOC00001.PDF") == PDF
    assert delivery(gateway).state == "relayed"


async def test_a_physician_who_turned_it_off_and_a_server_without_oids_send_no_package(
    hin_relay: MailSink, running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials,
    directory: Directory, tmp_path: Path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    keypair = make_keypair(tmp_path / "physician", doctor.address)
    import_key(gateway, keypair)
    pgp = gateway.openpgp()
    keypair.pin(pgp.export_public(pgp.signing_key(settings.mail.receipts_address)).encode())

    async def names_in_the_message(document: str) -> set[str]:
        before = len(hin_relay.messages)
        code, _ = await send(running, gateway, (dpi.username, dpi.password),
                             message([doctor.address], document=document), [doctor.address])
        assert code == 250
        await eventually(lambda: len(hin_relay.messages) == before + 1, what="relayed")
        _, payload = parse(hin_relay.messages[-1][2]).iter_parts()
        plaintext, _ = keypair.decrypt_and_verify(payload.get_payload(decode=True) or b"")
        return {p.get_filename() or "" for p in parse(plaintext).iter_parts()} - {""}

    assert await names_in_the_message("DOC-1") == {"lettre.pdf"}  # no OIDs configured: no package
    configure(settings)
    with gateway.db.transaction() as session:
        session.execute(update(Physician).where(Physician.id == doctor.id).values(preferences={"xdm": False}))
    assert await names_in_the_message("DOC-2") == {"lettre.pdf"}  # the physician said no
    with gateway.db.transaction() as session:
        session.execute(update(Physician).where(Physician.id == doctor.id).values(preferences={}))
    assert "IHE_XDM.zip" in await names_in_the_message("DOC-3")


async def test_the_webmail_offers_the_same_package_and_records_the_reading(
    running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials, directory: Directory
) -> None:
    from tests.integration.test_webmail import deposit

    doctor = directory.hosted(consents=("P-1001",))
    await deposit(running, gateway, dpi, doctor)
    with gateway.db.transaction() as session:
        item = session.scalars(select(MailboxItem.id)).one()
    async with WebClient(base(running)) as client:
        await login_sms(client, settings.sms_outbox, doctor.login or "", doctor.password)
        assert "logiciel de cabinet" not in (await client.get(f"/documents/{item}")).text
        assert (await client.get(f"/documents/{item}/xdm")).status_code == 404  # no OIDs: no package
        configure(settings)
        assert "Pour votre logiciel de cabinet (XDM)" in (await client.get(f"/documents/{item}")).text
        download = await client.get(f"/documents/{item}/xdm")
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    assert metadata_problems(download.content) == []
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        bundle = json.loads(archive.read("FHIR/DocumentReference.json"))
    assert fhir_problems(bundle, download.content) == []
    assert len(events(gateway, "read")) == 1
