"""Assistants and stand-ins over real HTTP: an assistant sees exactly the linked physicians' documents, a stand-in
only inside the window, other documents are 404, and every delegated read names both identities."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from sqlalchemy import select, update

from myhug.audit.balp import AuditSource
from myhug.audit.fhir import to_fhir, validate_fhir
from myhug.components import Components
from myhug.db.base import utcnow
from myhug.delivery.models import Delivery
from myhug.delivery.receipts import ReceiptContext, build_receipt
from myhug.directory.delegation import register_assistant, today
from myhug.directory.models import Delegation, Physician
from myhug.directory.service import DpiCredentials
from myhug.mailbox.models import MailboxItem
from myhug.supervisor import Running
from tests.conftest import Directory, Doctor, MailSink
from tests.helpers import PDF, eventually
from tests.helpers import web_base as base
from tests.integration.test_webmail import deposit, events
from tests.webclient import WebClient
from tests.webmail_flow import last_sms_code, login_sms

ASSISTANT_MOBILE = "+41797654321"


def item_of(gateway: Components, doctor: Doctor) -> int:
    with gateway.db.transaction() as session:
        return int(session.scalars(select(MailboxItem.id).where(MailboxItem.physician_id == doctor.id)).one())


async def assistant_login(client: WebClient, gateway: Components, login: str, temporary: str) -> None:
    """Password + SMS code (to the assistant's own mobile), then the first password change."""
    csrf = await client.csrf_of("/login")
    page = await client.post("/login", {"login": login, "password": temporary}, csrf=csrf)
    assert "Code SMS" in page.text and "•••• 21" in page.text  # the assistant's phone, not a physician's
    assert "Faire confiance" not in page.text  # a trusted device is a physician's choice only
    csrf = await client.csrf_of("/login/sms")
    page = await client.post("/login/sms", {"code": last_sms_code(gateway.settings.sms_outbox, ASSISTANT_MOBILE)},
                             csrf=csrf)
    assert page.url.path == "/password"
    csrf = await client.csrf_of("/password")
    page = await client.post("/password", {"current": temporary, "new": "assistante du cabinet 2026",
                                           "confirm": "assistante du cabinet 2026"}, csrf=csrf)
    assert page.url.path == "/documents", page.text[:500]


async def test_an_assistant_reads_exactly_the_linked_physicians_documents_and_each_read_names_both(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    alice = directory.hosted(family_name="Aubert", consents=("P-1001",))
    bruno = directory.hosted(family_name="Bovet", consents=("P-1002",), mobile="+41791234568")
    carla = directory.hosted(family_name="Chappuis", consents=("P-1003",), mobile="+41791234569")
    await deposit(running, gateway, dpi, alice, subject="Lettre pour Aubert")
    await deposit(running, gateway, dpi, bruno, document="DOC-2", patient="P-1002", subject="Lettre pour Bovet")
    await deposit(running, gateway, dpi, carla, document="DOC-3", patient="P-1003", subject="Lettre pour Chappuis")
    with gateway.db.transaction() as session:
        registration = register_assistant(session, given_name="Claire", family_name="Rochat",
                                          mobile=ASSISTANT_MOBILE, physician_glns=[alice.gln, bruno.gln], actor="cli")
        login, temporary = registration.assistant.login, registration.temporary_password
    assert len(events(gateway, "delegate-linked")) == 2
    mine, theirs = item_of(gateway, alice), item_of(gateway, carla)

    async with WebClient(base(running)) as client:
        await assistant_login(client, gateway, login, temporary)
        listing = (await client.get("/documents")).text
        assert "Documents de Dr Marie Aubert" in listing and "Lettre pour Aubert" in listing
        assert "Lettre pour Bovet" not in listing and "Lettre pour Chappuis" not in listing
        assert "Mon profil" not in listing and "Marquer comme lu" not in listing
        csrf = await client.csrf_of("/documents")
        # Opening Alice's document: the receipt and the trail name the assistant, Alice's "non lu" stays.
        assert (await client.get(f"/documents/{mine}/files/0")).content == PDF
        # Someone else's: 404, from the URL, the switch or a ZIP.
        assert (await client.get(f"/documents/{theirs}")).status_code == 404
        assert (await client.get(f"/documents/{theirs}/files/0")).status_code == 404
        assert (await client.get(f"/documents/{theirs}/archive")).status_code == 404
        assert (await client.post("/delegation/switch", {"owner": str(carla.id)}, csrf=csrf)).status_code == 404
        # What is the physician's own: 403.
        assert (await client.get("/profile")).status_code == 403
        own = await client.get("/profile/acces")  # the assistant's own passkeys, nothing of the physician's
        assert own.status_code == 200 and "Appareils de confiance" not in own.text
        assert (await client.get("/profile/delegation")).status_code == 403
        assert (await client.post("/documents/bulk", {"action": "all-read"}, csrf=csrf)).status_code == 403
        assert (await client.post(f"/documents/{mine}/unread", {}, csrf=csrf)).status_code == 403
        # The switch to the other linked physician.
        switched = await client.post("/delegation/switch", {"owner": str(bruno.id)}, csrf=csrf)
        assert "Lettre pour Bovet" in switched.text and "Lettre pour Aubert" not in switched.text

    with gateway.db.transaction() as session:
        item = session.get(MailboxItem, mine)
        assert item is not None and item.read_at is None and item.read_by == "Claire Rochat (assistant·e)"
        delivery = session.scalars(select(Delivery).where(Delivery.id == item.delivery_id)).one()
        assert delivery.state == "read"
    [read] = events(gateway, "read")
    assert json.loads(read.detail)["delegate"]["name"] == "Claire Rochat"
    [delegated] = events(gateway, "delegated-read")
    assert delegated.physician_gln == alice.gln and json.loads(delegated.detail)["delegate"]["login"] == login
    fhir = validate_fhir(to_fhir(delegated, AuditSource("gw.test")))
    who = [agent["who"]["identifier"]["value"] for agent in fhir["agent"]]
    assert f"assistant:{login}" in who and alice.gln in who  # both identities: the reader and the physician
    reader = next(a for a in fhir["agent"] if a["who"]["identifier"]["value"] == f"assistant:{login}")
    assert reader["requestor"] is True and reader["name"] == "Claire Rochat"
    with gateway.db.transaction() as session:
        submission = session.get(Delivery, delivery.id).submission  # type: ignore[union-attr]
        receipt = build_receipt(ReceiptContext(read, submission, alice.address), gateway.settings.mail,
                                AuditSource("gw.test")).decode()
    assert "Read by: Claire Rochat (practice assistant), on behalf of the recipient" in receipt

    # Alice sees who read it, and it is still new for her.
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, alice.login or "", alice.password)
        listing = (await client.get("/documents")).text
        assert "lu par Claire Rochat (assistant·e)" in listing and "non lu" in listing
        page = (await client.get("/profile/delegation")).text
        assert "Claire Rochat (assistant·e)" in page
        link_id = re.search(r"/profile/delegation/(\d+)/end", page).group(1)  # type: ignore[union-attr]
        csrf = await client.csrf_of("/profile/delegation")
        ended = await client.post(f"/profile/delegation/{link_id}/end", {}, csrf=csrf)
        assert "ne voit plus vos documents" in ended.text
    assert len(events(gateway, "delegate-unlinked")) == 1

    # Without Alice's link, the assistant sees Bruno's documents only, and Alice's are 404.
    async with WebClient(base(running)) as client:
        csrf = await client.csrf_of("/login")
        await client.post("/login", {"login": login, "password": "assistante du cabinet 2026"}, csrf=csrf)
        csrf = await client.csrf_of("/login/sms")
        await client.post("/login/sms", {"code": last_sms_code(gateway.settings.sms_outbox, ASSISTANT_MOBILE)},
                          csrf=csrf)
        listing = (await client.get("/documents")).text
        assert "Documents de Dr Marie Bovet" in listing and "Lettre pour Aubert" not in listing
        assert (await client.get(f"/documents/{mine}")).status_code == 404
        with gateway.db.transaction() as session:  # Bruno ends his link too: nothing left to read
            session.execute(update(Delegation).values(ended_at=utcnow()))
        assert (await client.get("/documents")).url.path == "/login"


async def test_a_stand_in_reads_only_inside_the_window_and_is_named_in_the_trail(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    absent = directory.hosted(family_name="Aubert", consents=("P-1001",))
    stand_in = directory.hosted(family_name="Favre", mobile="+41791234568")
    await deposit(running, gateway, dpi, absent, subject="Lettre pour Aubert")
    document = item_of(gateway, absent)
    async with WebClient(base(running)) as owner:
        await login_sms(owner, gateway.settings.sms_outbox, absent.login or "", absent.password)
        csrf = await owner.csrf_of("/profile/delegation")
        for gln, start, end, error in ((absent.gln, 0, 1, "vous remplacer vous-même"),
                                       ("7601000000000", 0, 1, "GLN"),
                                       (stand_in.gln, 2, 1, "précède"),
                                       (stand_in.gln, -3, -1, "déjà passée")):
            refused = await owner.post("/profile/delegation", {"gln": gln, "from": str(today() + timedelta(start)),
                                                               "to": str(today() + timedelta(end))}, csrf=csrf)
            assert refused.status_code == 400 and error in refused.text, (gln, refused.text[-800:])
        named = await owner.post("/profile/delegation", {"gln": stand_in.gln, "from": today().strftime("%d.%m.%Y"),
                                                         "to": str(today() + timedelta(3))}, csrf=csrf)
        assert "Le remplacement est enregistré" in named.text and "Dr Marie Favre (remplaçant·e)" in named.text

    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, stand_in.login or "", stand_in.password, "+41791234568")
        own = (await client.get("/documents")).text
        assert "Mes documents" in own and "Lettre pour Aubert" not in own  # one's own list stays apart
        colleagues = (await client.get("/remplacements")).text
        assert "Documents de Dr Marie Aubert (remplacement)" in colleagues
        csrf = await client.csrf_of("/remplacements")
        acting = await client.post("/delegation/switch", {"owner": str(absent.id)}, csrf=csrf)
        assert "Documents de Dr Marie Aubert (remplacement)" in acting.text and "Lettre pour Aubert" in acting.text
        assert (await client.get(f"/documents/{document}/files/0")).content == PDF
        [delegated] = events(gateway, "delegated-read")
        detail = json.loads(delegated.detail)["delegate"]
        assert detail["kind"] == "stand-in" and detail["gln"] == stand_in.gln and delegated.physician_gln == absent.gln
        fhir = validate_fhir(to_fhir(delegated, AuditSource("gw.test")))
        assert {a["who"]["identifier"]["value"] for a in fhir["agent"]} >= {stand_in.gln, absent.gln}

        # The window closes (back-dated): the next page is the stand-in's own, the switch is refused.
        with gateway.db.transaction() as session:
            session.execute(update(Delegation).values(starts_on=today() - timedelta(5), ends_on=today() - timedelta(1)))
        after = (await client.get("/documents")).text
        assert "Mes documents" in after and "Lettre pour Aubert" not in after
        assert (await client.get(f"/documents/{document}")).status_code == 404
        assert (await client.post("/delegation/switch", {"owner": str(absent.id)}, csrf=csrf)).status_code == 404
        # Not yet open: nothing either.
        with gateway.db.transaction() as session:
            session.execute(update(Delegation).values(starts_on=today() + timedelta(1), ends_on=today() + timedelta(2)))
        assert "Vous ne remplacez personne" in (await client.get("/remplacements")).text


async def test_a_linked_assistant_gets_the_physicians_notification_when_the_physician_chooses(
    mail_sink: MailSink, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    from myhug.supervisor import start

    doctor = directory.hosted(consents=("P-1001",))
    with gateway.db.transaction() as session:
        physician = session.get(Physician, doctor.id)
        assert physician is not None
        physician.email, physician.notification_mode = "marie.dupont@example.ch", "each"
        register_assistant(session, given_name="Claire", family_name="Rochat", mobile=ASSISTANT_MOBILE,
                           physician_glns=[doctor.gln], actor="cli", email="accueil@cabinet.ch")
        session.execute(update(Delegation).values(notify=True))
    run = await start(gateway, ("smtp", "worker"))
    try:
        await deposit(run, gateway, dpi, doctor)
        await eventually(lambda: len(mail_sink.messages) == 1, what="notification")
    finally:
        await run.stop()
    _, recipients, _ = mail_sink.messages[0]
    assert sorted(recipients) == ["accueil@cabinet.ch", "marie.dupont@example.ch"]


def test_a_physician_registered_after_an_assistant_of_the_same_name_gets_another_login(
    gateway: Components, directory: Directory
) -> None:
    from myhug.directory.identifiers import make_gln
    from myhug.directory.service import register_physician

    doctor = directory.hosted(family_name="Aubert")
    with gateway.db.transaction() as session:
        assistant = register_assistant(session, given_name="Marie", family_name="Rochat", mobile=ASSISTANT_MOBILE,
                                       physician_glns=[doctor.gln], actor="cli").assistant
        physician = register_physician(session, gln=make_gln("760100000777"), given_name="Marie",
                                       family_name="Rochat", mobile="+41791234560", actor="cli").physician
        assert assistant.login == "rochat.m" and physician.login == "rochat.m2"  # one login form serves both
