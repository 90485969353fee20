"""The DPI's API over real HTTP: auth, directory search, consents, status, recall, audit feed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from myhug.audit.models import AuditEvent
from myhug.audit.trail import record
from myhug.components import Components
from myhug.delivery.models import Delivery
from myhug.directory.identifiers import make_gln
from myhug.directory.service import (
    DpiCredentials,
    activate_with_password,
    add_dpi_client,
    register_physician,
)
from myhug.hin.keys import import_recipient_key
from myhug.mailbox.models import MailboxItem
from myhug.supervisor import Running, start
from tests.conftest import PASSWORD, Directory, MailSink
from tests.helpers import count, eventually, message, send
from tests.helpers import web_base as base
from tests.pgp_keys import make_keypair


@pytest.fixture
async def api(running: Running, dpi: DpiCredentials) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base(running), headers={"Authorization": f"Bearer {dpi.api_token}"},
                                 timeout=30) as client:
        yield client


def physician(gateway: Components, family: str, given: str = "Anna", *, specialties: tuple[str, ...] = (),
              activated: bool = True, n: list[int] = [0]) -> str:  # noqa: B006 (a counter across calls)
    n[0] += 1
    gln = make_gln(f"7601888{n[0]:05d}")
    with gateway.db.transaction() as session:
        reg = register_physician(session, gln=gln, given_name=given, family_name=family, mobile="+41791234567",
                                 specialties=specialties, actor="test")
        if activated:
            activate_with_password(session, reg.physician, reg.temporary_password or "", PASSWORD)
    return gln


def glns(bundle: dict) -> list[str]:  # type: ignore[type-arg]
    return [e["resource"]["identifier"][0]["value"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == "Practitioner"]


async def test_missing_or_wrong_token_is_401_operation_outcome(running: Running) -> None:
    async with httpx.AsyncClient(base_url=base(running)) as client:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
            response = await client.get("/api/v1/practitioners", headers=headers)
            assert response.status_code == 401
            assert response.headers["content-type"].startswith("application/fhir+json")
            assert response.json()["resourceType"] == "OperationOutcome"
        spec = await client.get("/api/openapi.json")
        assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")
        assert set(spec.json()["paths"]) == {
            "/api/v1/practitioners", "/api/v1/consents/{patient_id}/{gln}", "/api/v1/documents/{document_id}",
            "/api/v1/documents/{document_id}/retract", "/api/v1/audit"}


async def test_directory_search_ignores_accents_and_umlaut_spellings(gateway: Components, api: httpx.AsyncClient) -> None:
    mueller = physician(gateway, "Müller", "Jürg", specialties=("1014",))
    physician(gateway, "Dupont", "Marie", specialties=("1006",))
    physician(gateway, "Muster", "Inaktiv", activated=False)
    for query in ("Müller", "Mueller", "muller", "MÜL", "jurg", "Jürg Müll"):
        response = await api.get("/api/v1/practitioners", params={"name": query})
        assert response.status_code == 200, response.text
        assert glns(response.json()) == [mueller], query
    everyone = await api.get("/api/v1/practitioners")
    assert len(glns(everyone.json())) == 2  # the non-activated physician is not a recipient
    by_specialty = (await api.get("/api/v1/practitioners", params={"specialty": "1014"})).json()
    assert glns(by_specialty) == [mueller]
    role = next(e["resource"] for e in by_specialty["entry"] if e["resource"]["resourceType"] == "PractitionerRole")
    assert role["specialty"][0]["coding"][0] == {"system": "urn:oid:2.16.756.5.30.1.127.3.5", "code": "1014",
                                                  "display": "Neurologie"}
    practitioner = by_specialty["entry"][0]["resource"]
    assert practitioner["identifier"][0]["system"] == "urn:oid:2.51.1.3"
    assert glns((await api.get("/api/v1/practitioners", params={"gln": mueller})).json()) == [mueller]


@pytest.mark.parametrize("params", [{"specialty": "9999"}, {"gln": "123"}, {"gln": "7601000000018"},
                                    {"_count": "abc"}, {"_count": "-1"}, {"cursor": "garbage"},
                                    {"cursor": "a|²"}, {"cursor": "a|2³"}, {"cursor": "a|" + "9" * 30}])
async def test_bad_search_input_is_400(api: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await api.get("/api/v1/practitioners", params=params)
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"


async def test_pagination_is_stable_under_concurrent_inserts(gateway: Components, api: httpx.AsyncClient) -> None:
    names = ["Aebi", "Berset", "Cassis", "Dreifuss", "Egli", "Furgler"]
    created = [physician(gateway, name) for name in names]
    seen: list[str] = []
    url: str | None = "/api/v1/practitioners?_count=2"
    first = True
    while url:
        page = (await api.get(url)).json()
        seen += glns(page)
        if first:
            physician(gateway, "Abegg")  # sorts before the current position: must not shift later pages
            first = False
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert seen == created  # every one exactly once, in name order


async def test_consent_put_and_delete_take_effect_at_once(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, api: httpx.AsyncClient
) -> None:
    doctor = directory.hosted()
    put = await api.put(f"/api/v1/consents/P-77/{doctor.gln}")
    assert put.status_code == 200 and put.json()["resourceType"] == "Consent" and put.json()["status"] == "active"
    code, _ = await send(running, gateway, (dpi.username, dpi.password), message([doctor.address], patient="P-77"),
                         [doctor.address])
    assert code == 250
    deleted = await api.delete(f"/api/v1/consents/P-77/{doctor.gln}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "inactive"
    code, _ = await send(running, gateway, (dpi.username, dpi.password),
                         message([doctor.address], patient="P-77", document="DOC-2"), [doctor.address])
    assert code == 550
    assert (await api.put(f"/api/v1/consents/P-77/{make_gln('760100099999')}")).status_code == 404
    assert (await api.put(f"/api/v1/consents/P%2077/{doctor.gln}")).status_code == 400
    assert (await api.put("/api/v1/consents/P-77/12345")).status_code == 400


async def test_revoked_consent_blocks_a_queued_document(
    dpi_mail: MailSink, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    intake = await start(gateway, ("smtp", "web"))  # no worker yet: the document waits in the queue
    try:
        code, _ = await send(intake, gateway, (dpi.username, dpi.password), message([doctor.address]), [doctor.address])
        assert code == 250
        async with httpx.AsyncClient(base_url=base(intake), headers={"Authorization": f"Bearer {dpi.api_token}"}) as api:
            assert (await api.delete(f"/api/v1/consents/P-1001/{doctor.gln}")).status_code == 200
            worker = await start(gateway, ("worker",))
            try:
                await eventually(lambda: _states(gateway) == ["failed"], what="failed")
                await eventually(lambda: any(b"X-MyHUG-Event: failed" in m[2] for m in dpi_mail.messages),
                                 what="failed receipt")
            finally:
                await worker.stop()
            status = (await api.get("/api/v1/documents/DOC-1")).json()
            [recipient] = status["recipients"]
            assert recipient["state"] == "failed" and "consent withdrawn" in recipient["last_error"]
    finally:
        await intake.stop()
    assert count(gateway, MailboxItem) == 0


def _states(gateway: Components) -> list[str]:
    with gateway.db.transaction() as session:
        return list(session.scalars(select(Delivery.state).order_by(Delivery.created_at)))


async def test_document_status_gives_each_recipients_state_and_trail_to_its_sender_only(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, api: httpx.AsyncClient
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    await send(running, gateway, (dpi.username, dpi.password), message([doctor.address]), [doctor.address])
    await eventually(lambda: _states(gateway) == ["deposited"], what="deposit")
    status = (await api.get("/api/v1/documents/DOC-1")).json()
    [recipient] = status["recipients"]
    assert recipient["gln"] == doctor.gln and recipient["state"] == "deposited" and recipient["route"] == "hosted"
    assert [e["subtype"][0]["code"] for e in recipient["audit"]] == ["accepted", "deposited"]
    assert (await api.get("/api/v1/documents/NOPE")).status_code == 404
    with gateway.db.transaction() as session:
        other = add_dpi_client(session, "other-dpi")
    async with httpx.AsyncClient(base_url=base(running), headers={"Authorization": f"Bearer {other.api_token}"}) as client:
        assert (await client.get("/api/v1/documents/DOC-1")).status_code == 404
        assert (await client.post("/api/v1/documents/DOC-1/retract")).status_code == 404


async def test_retract_from_the_hosted_mailbox(
    dpi_mail: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory,
    api: httpx.AsyncClient
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    await send(running, gateway, (dpi.username, dpi.password), message([doctor.address]), [doctor.address])
    await eventually(lambda: _states(gateway) == ["deposited"], what="deposit")
    for bad in ('{"reason": 7}', '{"motif": "x"}', "not json", '{"reason": "deux\\nlignes"}', '["x"]'):
        refused = await api.post("/api/v1/documents/DOC-1/retract", content=bad)
        assert refused.status_code == 400, bad
    reason = "Adressé au mauvais médecin traitant"
    response = await api.post("/api/v1/documents/DOC-1/retract", json={"reason": reason})
    assert response.status_code == 200
    assert response.json()["retracted"][0]["previous_state"] == "deposited"
    assert _states(gateway) == ["retracted"]
    with gateway.db.transaction() as session:
        assert session.scalars(select(MailboxItem.state)).one() == "retracted"
    await eventually(lambda: any(b"X-MyHUG-Event: retracted" in m[2] for m in dpi_mail.messages), what="receipt")
    # The physician sees it as withdrawn and cannot open it.
    from tests.webclient import WebClient
    from tests.webmail_flow import login_sms

    async with WebClient(base(running)) as web:
        await login_sms(web, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        # The line stays, among the unread until seen: when, and the DPI's reason; never the content.
        unread = await web.get("/documents?show=unread")
        assert "Retiré par les HUG le" in unread.text and reason in unread.text
        assert "Lettre de sortie de Jean Exemple" not in unread.text and "Jean Exemple" not in unread.text
        item = count(gateway, MailboxItem)
        page = await web.get(f"/documents/{item}")
        assert page.status_code == 410 and "Document retiré" in page.text and reason in page.text
        assert "Page introuvable" not in page.text and "Jean Exemple" not in page.text
        assert "Retiré par les HUG" not in (await web.get("/documents?show=unread")).text  # seen now
        assert "Retiré par les HUG" in (await web.get("/documents?show=all")).text  # but kept
        assert (await web.get(f"/documents/{item}/files/0")).status_code == 404
    with gateway.db.reading() as session:  # the reason is sealed, and the trail says only that one was given
        events = session.scalars(select(AuditEvent).where(AuditEvent.event == "retracted")).all()
        assert all(reason not in e.detail and "mauvais" not in e.detail for e in events)
        assert json.loads(events[0].detail)["reason_given"] is True


async def test_retract_after_hin_relay_sends_an_encrypted_signed_notice(
    hin_relay: MailSink, running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory,
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    keypair = make_keypair(tmp_path / "k", doctor.address)
    with gateway.db.transaction() as session:
        import_recipient_key(session, gateway.openpgp(), keypair.public)
    await send(running, gateway, (dpi.username, dpi.password), message([doctor.address]), [doctor.address])
    await eventually(lambda: len(hin_relay.messages) == 1, what="relayed")
    await eventually(lambda: _states(gateway) == ["relayed"], what="relayed state")
    response = await api.post("/api/v1/documents/DOC-1/retract")
    assert response.status_code == 200 and response.json()["retracted"][0]["notice_delivery_id"]
    await eventually(lambda: len(hin_relay.messages) == 2, what="retraction notice")
    import email
    import email.policy

    notice = email.message_from_bytes(hin_relay.messages[1][2], policy=email.policy.default)
    assert notice.get_content_type() == "multipart/encrypted" and notice["Subject"] == "Document médical confidentiel"
    assert notice["DKIM-Signature"]
    inner = email.message_from_bytes(keypair.decrypt(list(notice.iter_parts())[1].get_payload(decode=True)),
                                     policy=email.policy.default)
    assert inner["Subject"] == "Retrait du document DOC-1"
    assert "a été retiré" in inner.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    status = (await api.get("/api/v1/documents/DOC-1")).json()
    assert status["recipients"][0]["state"] == "retracted"


@pytest.fixture
async def repository(running: Running, gateway: Components) -> AsyncIterator[httpx.AsyncClient]:
    """The hospital's audit repository: a client made with `dpi add-client --all-events`."""
    with gateway.db.transaction() as session:
        credentials = add_dpi_client(session, "audit-repository", actor="test", all_events=True)
    async with httpx.AsyncClient(base_url=base(running), headers={"Authorization": f"Bearer {credentials.api_token}"},
                                 timeout=30) as client:
        yield client


async def test_a_client_reads_only_its_own_submissions_events_and_an_all_events_client_reads_every_one(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, api: httpx.AsyncClient,
    repository: httpx.AsyncClient,
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    with gateway.db.transaction() as session:
        other = add_dpi_client(session, "dpi-other", actor="test")
        record(session, "login", actor="web:192.0.2.7", physician_gln=doctor.gln, detail={"via": "sms"})
    code, text = await send(running, gateway, (dpi.username, dpi.password), message([doctor.address]), [doctor.address])
    assert code == 250, text

    def documents(bundle: dict) -> str:  # type: ignore[type-arg]
        return json.dumps([e["resource"] for e in bundle.get("entry", [])])

    mine = (await api.get("/api/v1/audit")).json()
    assert "DOC-1" in documents(mine) and "192.0.2.7" not in documents(mine)
    async with httpx.AsyncClient(base_url=base(running), headers={"Authorization": f"Bearer {other.api_token}"},
                                 timeout=30) as intruder:
        theirs = (await intruder.get("/api/v1/audit")).json()
    assert theirs.get("entry", []) == []  # no document id, no GLN, no login with its address
    everything = (await repository.get("/api/v1/audit")).json()
    assert "DOC-1" in documents(everything) and "192.0.2.7" in documents(everything)


async def test_audit_feed_in_order_without_gaps_under_concurrent_writers(
    running: Running, gateway: Components, repository: httpx.AsyncClient
) -> None:
    api = repository
    def writer(i: int) -> None:
        for j in range(15):
            with gateway.db.transaction() as session:
                record(session, "login", actor=f"web:{i}", detail={"j": j})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    seen: list[int] = []
    after = 0
    while any(t.is_alive() for t in threads) or len(seen) < 60:
        page = (await api.get("/api/v1/audit", params={"after": after, "_count": 7})).json()
        batch = [int(e["resource"]["id"].split("-")[1]) for e in page.get("entry", [])]
        seen += batch
        after = batch[-1] if batch else after
        if not batch:
            await asyncio.sleep(0.01)
    for t in threads:
        t.join()
    assert seen == list(range(1, len(seen) + 1))  # in order, no gap, no repeat
    assert len(seen) >= 60
    assert (await api.get("/api/v1/audit", params={"after": "x"})).status_code == 400


@pytest.mark.parametrize("path", ["/api/v1/nothing", "/api/v1/documents/%00%ff", "/api/v1/documents/a%20b",
                                  "/api/v1/consents/x/y/z", "/api/v1/audit?_count=99999999999"])
async def test_odd_requests_never_500(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code < 500 and response.json()["resourceType"] == "OperationOutcome"


async def test_retention_expires_and_crypto_shreds_hosted_documents(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from myhug.audit.models import AuditEvent
    from myhug.blobs.models import SealedBlob
    from myhug.db.base import utcnow
    from myhug.delivery.models import Receipt
    from myhug.delivery.receipts import collect_receipts
    from myhug.mailbox.retention import RetentionSweeper

    doctor = directory.hosted(consents=("P-1001",))
    await send(running, gateway, (dpi.username, dpi.password), message([doctor.address]), [doctor.address])
    await send(running, gateway, (dpi.username, dpi.password), message([doctor.address], document="DOC-NEW"),
               [doctor.address])
    await eventually(lambda: _states(gateway) == ["deposited", "deposited"], what="deposits")
    with gateway.db.transaction() as session:
        old = session.scalars(select(MailboxItem).order_by(MailboxItem.id)).first()
        assert old is not None
        session.execute(update(MailboxItem).where(MailboxItem.id == old.id)
                        .values(deposited_at=utcnow() - timedelta(days=91)))
        old_submission = old.submission_id
    assert await RetentionSweeper(gateway.db, gateway.settings.mailbox.retention_days).run_once() == 1
    with gateway.db.transaction() as session:
        items = {i.submission_id: i.state for i in session.scalars(select(MailboxItem))}
        assert items[old_submission] == "expired" and sorted(items.values()) == ["available", "expired"]
        from myhug.delivery.models import Submission

        submission = session.get(Submission, old_submission)
        assert submission is not None
        blobs = [session.get(SealedBlob, b) for b in [submission.metadata_blob_id, *(d.blob_id for d in submission.documents)]]
        assert all(b is not None and b.ciphertext is None and b.wrapped_key is None and b.shredded_at for b in blobs)
        expired = session.scalars(select(AuditEvent).where(AuditEvent.event == "expired")).one()
        assert expired.document_id == "DOC-1" and "retention" in expired.detail
        collect_receipts(session)  # the receipts sender's step: what the trail owes the DPI
        assert session.scalars(select(Receipt).where(Receipt.audit_seq == expired.seq)).one()
        from myhug.audit.trail import verify

        assert verify(session).ok  # the trail outlives the document
    status = await _status(running, dpi, "DOC-1")
    assert status["recipients"][0]["state"] == "expired"


async def _status(running: Running, dpi: DpiCredentials, document: str) -> dict:  # type: ignore[type-arg]
    async with httpx.AsyncClient(base_url=base(running), headers={"Authorization": f"Bearer {dpi.api_token}"}) as c:
        return (await c.get(f"/api/v1/documents/{document}")).json()  # type: ignore[no-any-return]


async def test_token_guessing_is_answered_429_by_address_and_the_dpi_elsewhere_is_not_locked_out(
    running: Running, dpi: DpiCredentials
) -> None:
    statuses = []
    async with httpx.AsyncClient(base_url=base(running), timeout=30) as guesser:
        for n in range(30):
            response = await guesser.get("/api/v1/audit", headers={"Authorization": f"Bearer guess-{n}"})
            statuses.append(response.status_code)
        assert response.headers["retry-after"].isdigit()
        assert response.json()["resourceType"] == "OperationOutcome"
        # A throttled address learns nothing more, not even from a right token.
        right = await guesser.get("/api/v1/audit", headers={"Authorization": f"Bearer {dpi.api_token}"})
        assert right.status_code == 429
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
    # The real DPI, from its own address, is served.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=base(running).replace("127.0.0.1", "127.0.0.1"), transport=transport,
                                 headers={"Authorization": f"Bearer {dpi.api_token}"}, timeout=30) as real:
        assert (await real.get("/api/v1/audit")).status_code == 200
