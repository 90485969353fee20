"""Web login tried as an attacker would: forged forwarding headers, a lock dodged through an old
challenge, SMS bombing, a HIN login re-routing another physician's documents, a replayed staff TOTP."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import select

from myhug.audit.models import AuditEvent
from myhug.components import Components
from myhug.db.base import utcnow
from myhug.directory.models import Physician
from myhug.directory.service import register_physician
from myhug.staffdesk.service import add_staff, staff_login, unlock_staff
from myhug.supervisor import Running
from myhug.websecurity.forms import LoginRefused
from myhug.websecurity.models import LoginThrottle
from myhug.websecurity.throttle import LOCKED, is_locked, register_failure
from tests.conftest import PASSWORD, Directory
from tests.helpers import myhug
from tests.helpers import web_base as base
from tests.hin_proxy import hin_headers, hin_proxy
from tests.webclient import WebClient
from tests.webmail_flow import last_sms_code


def events(gateway: Components, name: str) -> list[AuditEvent]:
    with gateway.db.reading() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event == name)))


def physician(gateway: Components, gln: str) -> Physician:
    with gateway.db.reading() as session:
        found = session.scalar(select(Physician).where(Physician.gln == gln))
        assert found is not None
        session.expunge(found)
        return found


def sms_count(gateway: Components, mobile: str = "+41791234567") -> int:
    outbox = gateway.settings.sms_outbox
    if not outbox.exists():
        return 0
    return sum(1 for line in outbox.read_text().splitlines() if line.startswith(mobile + "\t"))


async def password_step(client: WebClient, login: str, password: str, origin: str | None = "same") -> str:
    csrf = await client.csrf_of("/login")
    page = await client.post("/login", {"login": login, "password": password}, csrf=csrf, origin=origin)
    return page.text


# --- forwarded headers ------------------------------------------------------------------------


FORGED = [
    {"X-Forwarded-For": "10.9.8.7"},
    {"X-Real-IP": "10.9.8.7"},
    {"Forwarded": "for=10.9.8.7"},
    {"X-Forwarded-For": "10.9.8.7", "X-Forwarded-Proto": "https"},
]


@pytest.mark.parametrize("forged", FORGED, ids=["x-forwarded-for", "x-real-ip", "forwarded", "with-proto"])
async def test_forged_forwarding_headers_from_loopback_get_no_hin_session(
    running: Running, gateway: Components, forged: dict[str, str]
) -> None:
    gateway.settings.hin.trusted_proxies = ["10.9.8.7/32"]  # the HIN proxy is elsewhere; the attacker is local
    gln = "7601000000777"[:12]
    from myhug.directory.identifiers import make_gln

    async with WebClient(base(running)) as client:
        page = await client.get("/hin/login", headers={**hin_headers(make_gln(gln)), **forged})
    assert page.status_code == 403 and "identité HIN" in page.text
    with gateway.db.reading() as session:
        assert session.scalar(select(Physician)) is None


async def test_forged_forwarding_headers_do_not_dodge_the_address_throttle(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        for n in range(20):  # twenty unknown logins, each claiming another address
            client.http.headers["X-Forwarded-For"] = f"10.0.0.{n + 1}"
            assert "incorrect" in await password_step(client, f"nobody{n}", "wrong")
        text = await password_step(client, doctor.login or "", doctor.password)
    assert LOCKED in text  # the twenty failures counted against the real peer, 127.0.0.1
    assert {event.actor for event in events(gateway, "login-failed")} == {"web:127.0.0.1"}


# --- the lock holds at every step -------------------------------------------------------------


async def test_the_right_code_on_a_challenge_opened_before_the_lock_does_not_log_in(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as victim_tab, WebClient(base(running)) as attacker:
        assert "Code SMS" in await password_step(victim_tab, doctor.login or "", doctor.password)
        code = last_sms_code(gateway.settings.sms_outbox)
        for _ in range(5):  # the account gets locked meanwhile
            await password_step(attacker, doctor.login or "", "wrong")
        csrf = await victim_tab.csrf_of("/login/sms")
        page = await victim_tab.post("/login/sms", {"code": code}, csrf=csrf)
        assert page.status_code == 401 and LOCKED in page.text
        assert (await victim_tab.get("/documents")).url.path != "/documents"
    assert not events(gateway, "login")
    with gateway.db.reading() as session:
        assert is_locked(session, f"login:{doctor.login}")  # and the lock is not cleared


# --- SMS bombing --------------------------------------------------------------------------------


async def test_twenty_five_right_password_logins_send_at_most_the_cap_of_codes(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()
    cap = gateway.settings.sms.max_codes_per_hour
    refusals = []
    for n in range(25):
        async with WebClient(base(running), local_address=f"127.0.1.{n + 1}") as client:
            text = await password_step(client, doctor.login or "", doctor.password)
            if "Code SMS" not in text:
                refusals.append(text)
    assert sms_count(gateway) == cap == 10
    assert len(refusals) == 25 - cap
    assert all("Trop de codes SMS" in text and "Réessayez après" in text for text in refusals), refusals[0][-1500:]
    capped = events(gateway, "sms-capped")
    assert len(capped) == 25 - cap and capped[0].physician_gln == doctor.gln


# --- HIN identity never re-routes an account by itself --------------------------------------------


async def test_hin_login_with_an_sms_physicians_gln_changes_nothing_until_linked(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()
    identity = hin_headers(doctor.gln, mail="intruder@hin.ch")
    async with hin_proxy(base(running), identity) as proxy, WebClient(proxy) as client:
        page = await client.get("/hin/login")
        assert page.status_code == 403 and "connectez-vous une fois avec votre mot de passe" in page.text
        after = physician(gateway, doctor.gln)
        assert (after.channel, after.hin_address) == ("hosted", None)
        assert not events(gateway, "login")

        # The deliberate step: logged in by password and SMS code, the physician confirms the link.
        assert "Code SMS" in await password_step(client, doctor.login or "", doctor.password, origin=None)
        csrf = await client.csrf_of("/login/sms")
        page = await client.post("/login/sms", {"code": last_sms_code(gateway.settings.sms_outbox)}, csrf=csrf,
                                 origin=None)
        assert page.url.path == "/documents"
        offer = await client.get("/hin/login")
        assert offer.status_code == 200 and "intruder@hin.ch" in offer.text and "Lier mon identité HIN" in offer.text
        assert physician(gateway, doctor.gln).channel == "hosted"  # an offer, not a change
        csrf = await client.csrf_of("/hin/login")
        done = await client.post("/hin/link", {}, csrf=csrf, origin=None)
        assert done.status_code == 200 and "identité HIN est liée" in done.text
    linked = physician(gateway, doctor.gln)
    assert (linked.channel, linked.hin_address) == ("hin", "intruder@hin.ch")
    [event] = events(gateway, "hin-linked")
    assert event.physician_gln == doctor.gln
    last = gateway.settings.sms_outbox.read_text().splitlines()[-1]
    assert last.startswith("+41791234567\t") and "identité HIN intruder@hin.ch a été liée" in last


async def test_hin_login_with_another_hin_address_than_registered_is_refused(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hin(address="hans.mueller@hin.ch")
    async with hin_proxy(base(running), hin_headers(doctor.gln, mail="other@hin.ch")) as proxy, \
            WebClient(proxy) as client:
        page = await client.get("/hin/login")
    assert page.status_code == 403 and "ne correspond pas" in page.text
    assert physician(gateway, doctor.gln).hin_address == "hans.mueller@hin.ch"


async def test_link_is_refused_without_a_password_and_sms_session(running: Running, gateway: Components,
                                                                   directory: Directory) -> None:
    doctor = directory.hosted()
    async with hin_proxy(base(running), hin_headers(doctor.gln)) as proxy, WebClient(proxy) as client:
        page = await client.post("/hin/link", {"csrf": "x"}, origin=None)
    assert page.url.path == "/login"
    assert physician(gateway, doctor.gln).channel == "hosted"


# --- staff desk: a replayed TOTP code, and the unlock commands ----------------------------------------


def test_a_reused_totp_code_is_refused_without_counting_as_a_failure(gateway: Components) -> None:
    with gateway.db.transaction() as session:
        staff = add_staff(session, gateway.sealer, "agent.cyber", "Agent")
    totp = pyotp.TOTP(staff.totp_secret)
    code = totp.now()
    with gateway.db.transaction() as session:
        staff_login(session, gateway.sealer, "agent.cyber", staff.password, code, "127.0.0.1")
    for _ in range(8):  # more than the lockout threshold
        with pytest.raises(LoginRefused, match="déjà été utilisé"):
            gateway.db.run_keeping_refusal(
                lambda session: staff_login(session, gateway.sealer, "agent.cyber", staff.password, code, "127.0.0.1"),
                (LoginRefused,))
    with gateway.db.reading() as session:
        assert not is_locked(session, "login:staff:agent.cyber", "ip:127.0.0.1")
        assert session.get(LoginThrottle, "login:staff:agent.cyber") is None
    next_code = totp.at(utcnow().timestamp() + totp.interval)  # the next step, within the allowed drift
    with gateway.db.transaction() as session:
        assert staff_login(session, gateway.sealer, "agent.cyber", staff.password, next_code, "127.0.0.1").login
    with pytest.raises(LoginRefused, match="incorrect"):  # a wrong code still counts
        gateway.db.run_keeping_refusal(
            lambda session: staff_login(session, gateway.sealer, "agent.cyber", staff.password, "000000", "127.0.0.1"),
            (LoginRefused,))
    with gateway.db.reading() as session:
        throttle = session.get(LoginThrottle, "login:staff:agent.cyber")
        assert throttle is not None and throttle.failures == 1


def test_unlock_commands_lift_a_lockout_and_are_audited(gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    with gateway.db.transaction() as session:
        add_staff(session, gateway.sealer, "agent.cyber", "Agent")
        for _ in range(5):
            register_failure(session, doctor.login or "", "127.0.0.9")
            register_failure(session, "staff:agent.cyber", "127.0.0.9")
    with gateway.db.reading() as session:
        assert is_locked(session, f"login:{doctor.login}") and is_locked(session, "login:staff:agent.cyber")
    assert "unlocked" in myhug(gateway.settings, "physician", "unlock", doctor.gln).stdout
    assert "unlocked" in myhug(gateway.settings, "staff", "unlock", "agent.cyber").stdout
    with gateway.db.reading() as session:
        assert not is_locked(session, f"login:{doctor.login}") and not is_locked(session, "login:staff:agent.cyber")
    assert len(events(gateway, "unlocked")) == 2
    with gateway.db.transaction() as session, pytest.raises(Exception, match="no staff member"):
        unlock_staff(session, "nobody")
    assert PASSWORD  # the physician's own password is untouched by an unlock


async def test_the_desk_unlocks_edits_contact_and_lists_the_accounts_awaiting_activation(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()
    with gateway.db.transaction() as session:
        staff = add_staff(session, gateway.sealer, "agent.cyber", "Agent")
        add_staff(session, gateway.sealer, "agent.deux", "Agent deux")
        registered = register_physician(session, gln="7601000000026", given_name="Luc", family_name="Favre",
                                        mobile="+41781112233", specialties=[], actor="test")
        registered.physician.created_at = utcnow() - timedelta(days=3)
        for _ in range(5):
            register_failure(session, doctor.login or "", "127.0.0.9")
            register_failure(session, "staff:agent.deux", "127.0.0.9")
    async with WebClient(base(running)) as client:
        csrf = await client.csrf_of("/staff/login")
        home = await client.post("/staff/login", {"login": staff.login, "password": staff.password,
                                                  "code": pyotp.TOTP(staff.totp_secret).now()}, csrf=csrf)
        assert "En attente d’activation" in home.text and "Luc Favre" in home.text and "depuis 3 jours" in home.text
        assert "Marie Dupont" not in home.text.split("En attente d’activation")[1]  # activated: not waiting
        page = await client.get(f"/staff/physicians/{doctor.gln}")
        assert "connexion bloquée" in page.text
        csrf = await client.csrf_of(f"/staff/physicians/{doctor.gln}")
        unlocked = await client.post(f"/staff/physicians/{doctor.gln}/unlock", {}, csrf=csrf)
        assert "La connexion est débloquée" in unlocked.text and "connexion bloquée" not in unlocked.text
        edited = await client.post(f"/staff/physicians/{doctor.gln}/contact",
                                   {"email": "cabinet@dupont.ch", "specialties": ["1014", "1025"]}, csrf=csrf)
        assert "L’e-mail et les spécialités sont enregistrés" in edited.text
        refused = await client.post(f"/staff/physicians/{doctor.gln}/contact", {"email": "pas une adresse"},
                                    csrf=csrf)
        assert refused.status_code == 400 and "n’est pas valable" in refused.text
        # The reprinted access letter names the physician and the login (it printed "Dr — GLN" once).
        letter = await client.get(f"/staff/physicians/{doctor.gln}/letter")
        assert letter.status_code == 200 and f"{doctor.login}" in letter.text and "Dupont" in letter.text
        assert "Dr —" not in letter.text
        staff_unlocked = await client.post("/staff/unlock", {"login": "agent.deux"}, csrf=csrf)
        assert "peut de nouveau se connecter" in staff_unlocked.text
    with gateway.db.reading() as session:
        assert not is_locked(session, f"login:{doctor.login}") and not is_locked(session, "login:staff:agent.deux")
        p = session.scalar(select(Physician).where(Physician.gln == doctor.gln))
        assert p is not None and p.email == "cabinet@dupont.ch" and {s.code for s in p.specialties} == {"1014", "1025"}
    assert [e.actor for e in events(gateway, "unlocked")] == ["staff:agent.cyber", "staff:agent.cyber"]
    assert any(e.actor == "staff:agent.cyber" for e in events(gateway, "profile-changed"))
