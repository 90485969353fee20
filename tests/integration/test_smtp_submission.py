"""The SMTP submission edge over loopback, with a real client doing STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from myhug.audit.models import AuditEvent
from myhug.audit.trail import verify
from myhug.blobs.models import SealedBlob
from myhug.components import Components
from myhug.delivery.models import Delivery, Submission
from myhug.directory.service import DpiCredentials
from myhug.mailbox.models import MailboxItem
from myhug.supervisor import Running
from tests.conftest import Directory
from tests.helpers import (
    PDF,
    connect,
    count,
    eventually,
    message,
    raw_dialogue,
    reply,
    send,
)


def creds(dpi: DpiCredentials) -> tuple[str, str]:
    return dpi.username, dpi.password


def nothing_stored(gateway: Components) -> bool:
    return count(gateway, Submission) == 0 and count(gateway, SealedBlob) == 0 and count(gateway, Delivery) == 0


async def test_accepted_document_is_committed_before_250_then_deposited_and_audited(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    code, text = await send(running, gateway, creds(dpi), message([doctor.address]), [doctor.address])
    assert code == 250, text
    assert text.startswith("2.0.0 queued as ")
    queue_id = text.rsplit(" ", 1)[1]
    # Committed before the reply: a separate connection sees the submission at once.
    with gateway.db.transaction() as session:
        submission = session.get(Submission, queue_id)
        assert submission is not None and submission.document_id == "DOC-1"
        assert submission.documents[0].sha256 and submission.documents[0].size == len(PDF)

    await eventually(lambda: count(gateway, MailboxItem, MailboxItem.physician_id == doctor.id) == 1, what="deposit")
    with gateway.db.transaction() as session:
        delivery = session.scalars(select(Delivery)).one()
        assert delivery.state == "deposited" and delivery.route == "hosted"
        events = [e.event for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
        assert events[-2:] == ["accepted", "deposited"]
        assert verify(session).ok
        # The document and the patient metadata are stored only sealed.
        submission = session.get(Submission, queue_id)
        assert submission is not None
        assert gateway.sealer.open_id(session, submission.documents[0].blob_id) == PDF
        meta = json.loads(gateway.sealer.open_id(session, submission.metadata_blob_id))
        assert meta["patient_id"] == "P-1001" and meta["patient_name"] == "Jean Exemple"
        for blob in session.scalars(select(SealedBlob)):
            assert b"Jean Exemple" not in (blob.ciphertext or b"") and b"%PDF" not in (blob.ciphertext or b"")
        for event in session.scalars(select(AuditEvent)):
            assert "P-1001" not in event.detail and "Jean" not in event.detail


async def test_unknown_recipient_gets_550_5_1_1(running: Running, gateway: Components, dpi: DpiCredentials) -> None:
    rcpt = "nobody@myhug.localhost"
    code, text = await send(running, gateway, creds(dpi), message([rcpt]), [rcpt])
    assert code == 550 and text.startswith("5.1.1")
    assert nothing_stored(gateway)


async def test_recipient_not_activated_gets_550_5_7_1_naming_the_reason(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(activated=False, consents=("P-1001",))
    code, text = await send(running, gateway, creds(dpi), message([doctor.address]), [doctor.address])
    assert code == 550 and text.startswith("5.7.1") and "not activated" in text
    assert nothing_stored(gateway)


async def test_no_consent_gets_550_5_7_1_naming_the_reason(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    code, text = await send(running, gateway, creds(dpi), message([doctor.address], patient="P-2002"), [doctor.address])
    assert code == 550 and text.startswith("5.7.1") and "not designated" in text
    assert nothing_stored(gateway)


async def test_revoked_consent_refuses_new_submissions(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    directory.consent("P-1001", doctor, granted=False)
    code, _ = await send(running, gateway, creds(dpi), message([doctor.address]), [doctor.address])
    assert code == 550


async def test_gln_alias_and_login_address_both_reach_the_physician(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    alias = f"{doctor.gln}@{gateway.settings.mail.domain}"
    code, text = await send(running, gateway, creds(dpi), message([alias], document="DOC-ALIAS"), [alias])
    assert code == 250, text
    code, text = await send(running, gateway, creds(dpi), message([doctor.address], document="DOC-ALIAS"), [doctor.address])
    assert code == 250, text
    assert count(gateway, Delivery) == 1  # same recipient, same document id


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda raw: raw.replace(b"X-MyHUG-Patient-Id:", b"X-Other:"), "X-MyHUG-Patient-Id"),
        (lambda raw: raw.replace(b"X-MyHUG-Document-Id:", b"X-Other:"), "X-MyHUG-Document-Id"),
        (lambda raw: raw.replace(b"1950-01-31", b"31.01.1950"), "X-MyHUG-Patient-Birthdate"),
        (lambda raw: raw.split(b"\n--", 1)[0], "malformed MIME"),
        (lambda raw: b"\x01\x02 this is not a message at all", "malformed MIME"),
        (lambda raw: raw.replace(b"Jean Exemple", b"Jean\x00Exemple", 1), "NUL byte"),
    ],
    ids=["no-patient-id", "no-document-id", "bad-birthdate", "truncated-multipart", "garbage", "nul-byte"],
)
async def test_bad_metadata_or_mime_gets_554_5_6_0_naming_it_and_server_keeps_serving(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, mutate, named: str
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    code, text = await send(running, gateway, creds(dpi), mutate(message([doctor.address])), [doctor.address])
    assert code == 554 and text.startswith("5.6.0") and named in text, text
    assert nothing_stored(gateway)
    # The same server still accepts a good message.
    code, text = await send(running, gateway, creds(dpi), message([doctor.address]), [doctor.address])
    assert code == 250, text


async def test_bad_gln_alias_is_an_unknown_recipient(running: Running, gateway: Components, dpi: DpiCredentials) -> None:
    rcpt = f"7601000000018@{gateway.settings.mail.domain}"  # wrong check digit
    code, text = await send(running, gateway, creds(dpi), message([rcpt]), [rcpt])
    assert code == 550 and text.startswith("5.1.1")


async def test_too_large_gets_552_5_3_4(gateway: Components, dpi: DpiCredentials, directory: Directory) -> None:
    from myhug.supervisor import start

    gateway.settings.smtp.max_message_size = 20_000
    doctor = directory.hosted(consents=("P-1001",))
    run = await start(gateway, ("smtp",))
    try:
        big = message([doctor.address], attachments=[])  # replaced below
        from myhug.dpi_client import Attachment

        big = message([doctor.address], attachments=[Attachment("big.pdf", PDF + b"0" * 40_000)])
        code, text = await send(run, gateway, creds(dpi), big, [doctor.address])
        assert code == 552 and text.startswith("5.3.4"), text
        assert nothing_stored(gateway)
    finally:
        await run.stop()


async def test_mail_or_auth_before_starttls_gets_530_5_7_0(running: Running) -> None:
    assert running.smtp_address is not None
    replies = await raw_dialogue(running.smtp_address, [b"EHLO dpi", b"MAIL FROM:<dpi@hug.localhost>", b"AUTH PLAIN AHgAeQ==", b"NOOP"])
    assert replies[0].startswith("250") and "STARTTLS" in replies[0]
    assert "AUTH" not in replies[0]  # not even offered before TLS
    assert replies[1].startswith("530 5.7.0")
    assert replies[2].startswith("530 5.7.0")
    assert replies[3].startswith("250")  # still serving


async def test_mail_without_auth_gets_530_5_7_0(running: Running, gateway: Components) -> None:
    client = await connect(running, gateway)
    try:
        code, text = await reply(client.mail("dpi@hug.localhost"))
        assert code == 530 and text.startswith("5.7.0")
    finally:
        await client.quit()


async def test_three_auth_failures_close_the_connection(running: Running, gateway: Components, dpi: DpiCredentials) -> None:
    client = await connect(running, gateway)
    codes = []
    try:
        for _ in range(4):  # aiosmtplib may try more than one mechanism per login()
            codes.append((await reply(client.login(dpi.username, "wrong")))[0])
            if codes[-1] == 421:
                break
    finally:
        client.close()
    assert codes[-1] == 421 and set(codes[:-1]) == {535}, codes
    # The server keeps serving other connections.
    client = await connect(running, gateway, credentials=creds(dpi))
    await client.quit()


async def test_wrong_password_is_refused_and_server_keeps_serving(
    running: Running, gateway: Components, dpi: DpiCredentials
) -> None:
    client = await connect(running, gateway)
    try:
        code, _ = await reply(client.login(dpi.username, "wrong password"))
        assert code == 535
    finally:
        client.close()
    client = await connect(running, gateway, credentials=creds(dpi))
    await client.quit()


async def test_storage_fault_gets_451_4_3_0_and_nothing_half_stored(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    real_store = gateway.sealer.store
    calls = {"n": 0}

    def failing_store(session, prepared):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # the metadata blob is already in the transaction; the document's row fails
            raise OSError("disk full")
        return real_store(session, prepared)

    monkeypatch.setattr(gateway.sealer, "store", failing_store)
    code, text = await send(running, gateway, creds(dpi), message([doctor.address]), [doctor.address])
    assert code == 451 and text.startswith("4.3.0"), text
    assert "disk full" not in text and "OSError" not in text
    assert nothing_stored(gateway)
    monkeypatch.setattr(gateway.sealer, "store", real_store)
    code, text = await send(running, gateway, creds(dpi), message([doctor.address]), [doctor.address])
    assert code == 250, text


async def test_same_document_to_same_recipient_is_deposited_once(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    first = await send(running, gateway, creds(dpi), message([doctor.address]), [doctor.address])
    second = await send(running, gateway, creds(dpi), message([doctor.address]), [doctor.address])
    both = await asyncio.gather(
        *(send(running, gateway, creds(dpi), message([doctor.address], document="DOC-RACE"), [doctor.address]) for _ in range(4))
    )
    assert first == second and first[0] == 250
    assert {r for r in both} == {both[0]} and both[0][0] == 250
    await eventually(lambda: count(gateway, MailboxItem) == 2, what="two deposits")
    await asyncio.sleep(0.3)
    assert count(gateway, MailboxItem) == 2
    assert count(gateway, Delivery) == 2


async def test_one_message_to_several_recipients_and_all_or_nothing_refusal(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    a = directory.hosted(consents=("P-1001",), family_name="Alpha")
    b = directory.hosted(consents=("P-1001",), family_name="Beta")
    c = directory.hosted(consents=(), family_name="Gamma")
    code, text = await send(running, gateway, creds(dpi), message([a.address, b.address, c.address]), [a.address, b.address, c.address])
    assert code == 550 and c.gln in text
    assert nothing_stored(gateway)
    code, text = await send(running, gateway, creds(dpi), message([a.address, b.address]), [a.address, b.address])
    assert code == 250
    await eventually(lambda: count(gateway, MailboxItem) == 2, what="both deposits")


async def test_twenty_concurrent_submitters_every_message_accounted_for(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    replies = await asyncio.gather(
        *(send(running, gateway, creds(dpi), message([doctor.address], document=f"DOC-C{i}"), [doctor.address]) for i in range(20))
    )
    assert [code for code, _ in replies] == [250] * 20, replies
    queue_ids = {text.rsplit(" ", 1)[1] for _, text in replies}
    assert len(queue_ids) == 20
    await eventually(lambda: count(gateway, MailboxItem) == 20, timeout=60, what="20 deposits")
    with gateway.db.transaction() as session:
        assert {d.submission_id for d in session.scalars(select(Delivery))} == queue_ids
        assert {d.state for d in session.scalars(select(Delivery))} == {"deposited"}
        assert verify(session).ok


async def test_document_queued_for_a_physician_suspended_meanwhile_is_held(
    gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    from myhug.directory import admin
    from myhug.supervisor import start

    doctor = directory.hosted(consents=("P-1001",))
    intake = await start(gateway, ("smtp",))
    try:
        code, _ = await send(intake, gateway, creds(dpi), message([doctor.address]), [doctor.address])
        assert code == 250
    finally:
        await intake.stop()
    with gateway.db.transaction() as session:
        admin.apply(session, "suspend", doctor.gln, actor="test")
    worker = await start(gateway, ("worker",))
    try:
        await eventually(lambda: count(gateway, Delivery, Delivery.state == "held") == 1, what="held")
    finally:
        await worker.stop()
    assert count(gateway, MailboxItem) == 0
