"""The webmail's rules over real HTTP: login, activation, pages, sessions, CSRF, access control."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import select, update

from myhug.audit.models import AuditEvent
from myhug.components import Components
from myhug.db.base import utcnow
from myhug.delivery.models import Delivery
from myhug.directory.models import Physician
from myhug.directory.service import DpiCredentials
from myhug.mailbox.models import MailboxItem
from myhug.supervisor import Running
from myhug.websecurity.models import LoginChallenge, WebSession
from tests.conftest import Directory, Doctor, MailSink
from tests.helpers import PDF, count, eventually, message, send
from tests.helpers import web_base as base
from tests.webclient import CSRF as CSRF_RE
from tests.webclient import WebClient
from tests.webmail_flow import last_sms_code, login_sms


async def deposit(running: Running, gateway: Components, dpi: DpiCredentials, doctor: Doctor, document: str = "DOC-1",
                  patient: str = "P-1001", **extra: object) -> None:
    before = count(gateway, MailboxItem)
    code, text = await send(running, gateway, (dpi.username, dpi.password),
                            message([doctor.address], document=document, patient=patient, **extra), [doctor.address])
    assert code == 250, text
    await eventually(lambda: count(gateway, MailboxItem) == before + 1, what="deposit")


def events(gateway: Components, name: str) -> list[AuditEvent]:
    with gateway.db.transaction() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event == name)))


async def test_reading_a_document_serves_the_exact_bytes_and_records_read(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    await deposit(running, gateway, dpi, doctor)
    async with WebClient(base(running)) as client:
        assert await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password) == "/documents"
        listing = await client.get("/documents")
        assert "Lettre de sortie de Jean Exemple" in listing.text and "non lu" in listing.text
        item_id = count(gateway, MailboxItem) and _first_item(gateway)
        detail = await client.get(f"/documents/{item_id}")
        assert detail.status_code == 200 and "Jean Exemple" in detail.text and "lettre.pdf" in detail.text
        inline = await client.get(f"/documents/{item_id}/files/0")
        assert inline.status_code == 200 and inline.content == PDF
        assert inline.headers["content-type"] == "application/pdf"
        assert inline.headers["content-disposition"].startswith("inline;")
        assert "sandbox" in inline.headers["content-security-policy"]
        # Only our own document page may frame it (the preview), for browsers with and without CSP level 2.
        assert "frame-ancestors 'self'" in inline.headers["content-security-policy"]
        assert inline.headers["x-frame-options"] == "SAMEORIGIN" and detail.headers["x-frame-options"] == "DENY"
        download = await client.get(f"/documents/{item_id}/files/0?download=1")
        assert download.headers["content-disposition"].startswith("attachment;") and download.content == PDF
    assert len(events(gateway, "read")) == 1  # the second opening is not a new "read"
    with gateway.db.transaction() as session:
        assert session.scalars(select(Delivery)).one().state == "read"


def _first_item(gateway: Components) -> int:
    with gateway.db.transaction() as session:
        return int(session.scalars(select(MailboxItem.id).order_by(MailboxItem.id)).first() or 0)


async def test_first_login_forces_password_change_which_activates(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted(activated=False)
    async with WebClient(base(running)) as client:
        assert await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password) == "/password"
        assert (await client.get("/documents")).url.path == "/password"  # nothing else until changed
        csrf = await client.csrf_of("/password")
        weak = await client.post("/password", {"current": doctor.password, "new": "password", "confirm": "password"}, csrf=csrf)
        assert weak.status_code == 400 and "trop courant" in weak.text
        short = await client.post("/password", {"current": doctor.password, "new": "abc", "confirm": "abc"}, csrf=csrf)
        assert short.status_code == 400 and "au moins 8" in short.text
        mismatch = await client.post("/password", {"current": doctor.password, "new": "une phrase assez longue", "confirm": "autre phrase longue"}, csrf=csrf)
        assert mismatch.status_code == 400 and "pas identiques" in mismatch.text
        long_pass = "une très longue phrase de passe " * 3  # 64+ characters are allowed
        done = await client.post("/password", {"current": doctor.password, "new": long_pass, "confirm": long_pass}, csrf=csrf)
        assert done.status_code == 200 and done.url.path == "/documents"
    with gateway.db.transaction() as session:
        physician = session.get(Physician, doctor.id)
        assert physician is not None and physician.status == "activated" and not physician.password_must_change
    assert [e.physician_gln for e in events(gateway, "activated")] == [doctor.gln]


async def test_unknown_user_and_wrong_password_get_the_same_answer(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        csrf = await client.csrf_of("/login")
        wrong = await client.post("/login", {"login": doctor.login, "password": "not it"}, csrf=csrf)
        unknown = await client.post("/login", {"login": "nobody", "password": "not it"}, csrf=csrf)
    assert wrong.status_code == unknown.status_code == 401
    # The same page, but for the login typed, which the form keeps so that it need not be typed again.
    assert wrong.text.replace(f'value="{doctor.login}"', 'value="X"') == unknown.text.replace('value="nobody"', 'value="X"')
    assert "Identifiant ou mot de passe incorrect" in wrong.text


async def _start_sms(client: WebClient, doctor: Doctor) -> None:
    csrf = await client.csrf_of("/login")
    page = await client.post("/login", {"login": doctor.login, "password": doctor.password}, csrf=csrf)
    assert "Code SMS" in page.text


async def test_sms_code_expires_after_five_minutes(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await _start_sms(client, doctor)
        code = last_sms_code(gateway.settings.sms_outbox)
        with gateway.db.transaction() as session:
            session.execute(update(LoginChallenge).values(expires_at=utcnow() - timedelta(seconds=1)))
        csrf = await client.csrf_of("/login/sms")
        page = await client.post("/login/sms", {"code": code}, csrf=csrf)
        assert page.status_code == 401 and "n’est plus valable" in page.text


async def test_sms_code_is_bound_to_its_attempt_and_used_once(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as first, WebClient(base(running)) as second:
        await _start_sms(first, doctor)
        code_first = last_sms_code(gateway.settings.sms_outbox)
        await _start_sms(second, doctor)
        code_second = last_sms_code(gateway.settings.sms_outbox)
        if code_first != code_second:  # 1 in 10^6 they coincide
            csrf = await second.csrf_of("/login/sms")
            refused = await second.post("/login/sms", {"code": code_first}, csrf=csrf)
            assert refused.status_code == 401 and "Code incorrect" in refused.text
        csrf = await first.csrf_of("/login/sms")
        ok = await first.post("/login/sms", {"code": code_first}, csrf=csrf, follow=False)
        assert ok.status_code == 303
        # Replaying the used code on the old pre-login session does not log in again.
        replay = await first.http.post("/login/sms", data={"code": code_first, "csrf": csrf},
                                       headers={"Origin": first.base_url, "Cookie": ok.request.headers["cookie"]})
        assert replay.status_code == 303 and replay.headers["location"].startswith("/login?")


async def test_five_wrong_codes_kill_the_attempt(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await _start_sms(client, doctor)
        good = last_sms_code(gateway.settings.sms_outbox)
        wrong = "000000" if good != "000000" else "111111"
        csrf = await client.csrf_of("/login/sms")
        for attempt in range(1, 5):
            page = await client.post("/login/sms", {"code": wrong}, csrf=csrf)
            assert f"Il vous reste {5 - attempt} essai" in page.text
        page = await client.post("/login/sms", {"code": wrong}, csrf=csrf)
        assert "n’est plus valable" in page.text and page.url.path == "/login/sms"
        page = await client.post("/login/sms", {"code": good}, csrf=csrf)
        assert page.url.path == "/login" or "Connexion" in page.text
    assert len(events(gateway, "login-failed")) == 5


async def test_resend_has_a_cooldown_and_keeps_the_failure_count(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await _start_sms(client, doctor)
        first = last_sms_code(gateway.settings.sms_outbox)
        csrf = await client.csrf_of("/login/sms")
        await client.post("/login/sms", {"code": "000000" if first != "000000" else "111111"}, csrf=csrf)
        early = await client.post("/login/sms/resend", {}, csrf=csrf)
        assert early.status_code == 429 and "patienter" in early.text
        with gateway.db.transaction() as session:
            session.execute(update(LoginChallenge).values(last_sent_at=utcnow() - timedelta(seconds=31)))
        later = await client.post("/login/sms/resend", {}, csrf=csrf)
        assert later.status_code == 200 and "nouveau code" in later.text
        with gateway.db.transaction() as session:
            challenge = session.scalars(select(LoginChallenge)).one()
            assert challenge.attempts == 1 and challenge.sends == 2
        second = last_sms_code(gateway.settings.sms_outbox)
        if second != first:
            stale = await client.post("/login/sms", {"code": first}, csrf=csrf)
            assert "Code incorrect" in stale.text
        page = await client.post("/login/sms", {"code": second}, csrf=csrf)
        assert page.url.path == "/documents"


async def test_account_lockout_after_repeated_password_failures(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        csrf = await client.csrf_of("/login")
        for _ in range(5):
            await client.post("/login", {"login": doctor.login, "password": "wrong"}, csrf=csrf)
        locked = await client.post("/login", {"login": doctor.login, "password": doctor.password}, csrf=csrf)
        assert locked.status_code == 401 and "Trop de tentatives" in locked.text


async def test_ip_lockout_across_logins(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        csrf = await client.csrf_of("/login")
        for i in range(20):
            await client.post("/login", {"login": f"guess{i}", "password": "x"}, csrf=csrf)
        locked = await client.post("/login", {"login": doctor.login, "password": doctor.password}, csrf=csrf)
        assert "Trop de tentatives" in locked.text
    # Another address is not locked out.
    async with WebClient(base(running), local_address="127.0.0.2") as other:
        page = await other.post("/login", {"login": doctor.login, "password": doctor.password},
                                csrf=await other.csrf_of("/login"))
        assert "Code SMS" in page.text


async def test_csrf_token_and_origin_are_required(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        csrf = await client.csrf_of("/profile")
        no_token = await client.post("/profile", {"landing": "patients"})
        assert no_token.status_code == 403
        bad_token = await client.post("/profile", {"landing": "patients"}, csrf="forged")
        assert bad_token.status_code == 403
        foreign = await client.post("/profile", {"landing": "patients"}, csrf=csrf, origin="https://evil.example")
        assert foreign.status_code == 403
        login_forged = await client.post("/login", {"login": "x", "password": "y"}, csrf="forged")
        assert login_forged.status_code == 403
    assert events(gateway, "profile-changed") == []


async def test_get_never_changes_state(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        await client.get("/logout")
        assert (await client.get("/documents")).url.path == "/documents"  # still logged in


async def test_session_cookie_flags_and_new_id_at_login(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await _start_sms(client, doctor)
        pre_login = client.cookies["__Host-myhug"]
        csrf = await client.csrf_of("/login/sms")
        await client.post("/login/sms", {"code": last_sms_code(gateway.settings.sms_outbox)}, csrf=csrf)
        assert client.cookies["__Host-myhug"] != pre_login
        header = next(h for h in client.set_cookie_headers if h.startswith("__Host-myhug="))
        lowered = header.lower()
        assert "secure" in lowered and "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
        assert "domain=" not in lowered


async def test_idle_and_absolute_timeouts(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        with gateway.db.transaction() as session:
            session.execute(update(WebSession).values(last_seen_at=utcnow() - timedelta(minutes=31)))
        assert (await client.get("/documents")).url.path == "/login"
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        assert (await client.get("/documents")).url.path == "/documents"
        with gateway.db.transaction() as session:
            session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        assert (await client.get("/documents")).url.path == "/login"


async def test_logout_kills_the_session_on_the_server(running: Running, gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        stolen = client.cookies["__Host-myhug"]
        csrf = await client.csrf_of("/documents")
        await client.post("/logout", {}, csrf=csrf)
        assert count(gateway, WebSession) == 0
        replay = await client.http.get("/documents", headers={"Cookie": f"__Host-myhug={stolen}"})
        assert replay.status_code == 303 and replay.headers["location"].startswith("/login?")


async def test_another_physicians_document_is_404_and_audited(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    owner = directory.hosted(consents=("P-1001",), family_name="Owner")
    intruder = directory.hosted(family_name="Intruder", mobile="+41787654321")
    await deposit(running, gateway, dpi, owner)
    item_id = _first_item(gateway)
    async with WebClient(base(running)) as client:
        csrf = await client.csrf_of("/login")
        await client.post("/login", {"login": intruder.login, "password": intruder.password}, csrf=csrf)
        csrf = await client.csrf_of("/login/sms")
        await client.post("/login/sms", {"code": last_sms_code(gateway.settings.sms_outbox, "+41787654321")}, csrf=csrf)
        for path in (f"/documents/{item_id}", f"/documents/{item_id}/files/0", "/documents/999999"):
            page = await client.get(path)
            assert page.status_code == 404, path
            assert "Jean Exemple" not in page.text
        listing = await client.get("/documents")
        assert "Jean Exemple" not in listing.text
    denied = events(gateway, "access-denied")
    assert len(denied) == 3 and all(e.physician_gln == intruder.gln for e in denied)
    assert events(gateway, "read") == []


@pytest.mark.parametrize("state", ["retracted", "expired"])
async def test_retracted_and_expired_documents_cannot_be_opened(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, state: str
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    await deposit(running, gateway, dpi, doctor)
    item_id = _first_item(gateway)
    with gateway.db.transaction() as session:
        session.execute(update(MailboxItem).values(state=state))
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        assert (await client.get(f"/documents/{item_id}/files/0")).status_code == 404
        listing = await client.get("/documents?show=all")
        said = "Retiré par les HUG" if state == "retracted" else "Document effacé"
        assert said in listing.text and "Jean Exemple" not in listing.text and "Exemple Jean" not in listing.text


async def test_security_headers_on_every_page(running: Running) -> None:
    async with WebClient(base(running)) as client:
        page = await client.get("/login")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert page.headers["strict-transport-security"].startswith("max-age=")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert '<html lang="fr-CH">' in page.text


async def test_errors_never_show_a_stack_trace(running: Running, gateway: Components, directory: Directory,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import myhug.webmail.documents as webmail_app

    doctor = directory.hosted()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals /srv/myhug")

    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        monkeypatch.setattr(webmail_app, "list_documents", broken)
        page = await client.get("/documents")
        missing = await client.get("/nowhere")
        bad_param = await client.get("/documents?page=abc")
    assert page.status_code == 500 and "Erreur interne" in page.text
    assert "Traceback" not in page.text and "secret internals" not in page.text
    assert missing.status_code == 404 and "introuvable" in missing.text
    assert bad_param.status_code in (400, 500) and "Traceback" not in bad_param.text


async def test_profile_changes_landing_page_and_filters(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001", "P-2002"))
    await deposit(running, gateway, dpi, doctor, document="DOC-A", subject="Lettre A")
    await deposit(running, gateway, dpi, doctor, document="DOC-B", patient="P-2002", patient_name="Anne Autre",
                  document_type="lab-report", subject="Labo B")
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        # Read A, then ask for unread documents only, lab reports only, landing on "Mes patients".
        item_a = _first_item(gateway)
        await client.get(f"/documents/{item_a}/files/0")
        csrf = await client.csrf_of("/profile")
        saved = await client.post("/profile", {
            "notification_mode": "none", "email": "", "specialties": ["1006", "1014"], "landing": "patients",
            "documents_show": "unread", "documents_days": "30", "patients_show": "unread", "patients_days": "90",
        }, csrf=csrf)
        assert saved.status_code == 200 and "enregistrées" in saved.text
        docs = await client.get("/documents")
        assert "Labo B" in docs.text and "Lettre A" not in docs.text
        patients = await client.get("/patients")
        assert "Autre Anne" in patients.text and "Exemple Jean" not in patients.text
        csrf = await client.csrf_of("/profile")
        await client.post("/profile", {
            "notification_mode": "none", "landing": "patients", "documents_show": "all", "documents_days": "30",
            "document_types": ["discharge-letter"], "patients_show": "all", "patients_days": "90",
            "specialties": ["1006"],
        }, csrf=csrf)
        docs = await client.get("/documents")
        assert "Lettre A" in docs.text and "Labo B" not in docs.text
        bad = await client.post("/profile", {"notification_mode": "each", "email": "", "landing": "patients",
                                             "documents_show": "all", "documents_days": "30", "patients_show": "all",
                                             "patients_days": "90"}, csrf=csrf)
        assert bad.status_code == 400 and "adresse e-mail" in bad.text
        await client.post("/logout", {}, csrf=csrf)
        assert await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password) == "/patients"
    with gateway.db.transaction() as session:
        physician = session.get(Physician, doctor.id)
        assert physician is not None and sorted(s.code for s in physician.specialties) == ["1006"]
    changed = [json.loads(e.detail)["changed"] for e in events(gateway, "profile-changed")]
    assert "landing" in changed[0] and "specialties" in changed[0]


async def test_notification_mail_has_a_count_and_a_link_but_no_patient_data(
    mail_sink: MailSink, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    from myhug.supervisor import start

    doctor = directory.hosted(consents=("P-1001",))
    with gateway.db.transaction() as session:
        physician = session.get(Physician, doctor.id)
        assert physician is not None
        physician.email = "marie.dupont@example.ch"
        physician.notification_mode = "each"
    gateway.settings.web.public_url = "https://www.myhug.ch"
    run = await start(gateway, ("smtp", "worker"))
    try:
        await deposit(run, gateway, dpi, doctor)
        await eventually(lambda: len(mail_sink.messages) == 1, what="notification")
        await eventually(lambda: len(events(gateway, "notified")) == 1, what="notified event")
    finally:
        await run.stop()
    sender, rcpts, raw = mail_sink.messages[0]
    assert rcpts == ["marie.dupont@example.ch"]
    text = raw.decode("utf-8", "replace")
    assert "https://www.myhug.ch/documents" in text
    # DKIM-signed like the receipts, so that it does not land in spam; it verifies against the published key.
    import dkim

    from myhug.crypto.keys import dkim_dns_record

    record = dkim_dns_record(gateway.settings.dkim_key_file).encode()
    assert raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record)
    for secret in ("Jean", "Exemple", "P-1001", "1950", "Lettre", "DOC-1", "lettre.pdf"):
        assert secret not in text, secret


async def test_digest_mode_sends_one_message_for_several_documents(
    mail_sink: MailSink, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    from myhug.supervisor import start

    doctor = directory.hosted(consents=("P-1001",))
    with gateway.db.transaction() as session:
        physician = session.get(Physician, doctor.id)
        assert physician is not None
        physician.email = "marie.dupont@example.ch"
        physician.notification_mode = "digest"
        physician.digest_sent_at = utcnow()  # a digest just went out: the next waits a day
    run = await start(gateway, ("smtp", "worker"))
    try:
        await deposit(run, gateway, dpi, doctor, document="DOC-D1")
        await deposit(run, gateway, dpi, doctor, document="DOC-D2")
        assert run.notifier is not None
        run.notifier.stop()  # drive the notifier by hand from here on
        await asyncio.sleep(0.3)
        notifier = gateway.notifier()
        assert await notifier.run_once() == 0 and mail_sink.messages == []
        with gateway.db.transaction() as session:
            session.execute(update(Physician).values(digest_sent_at=utcnow() - timedelta(hours=25)))
        assert await notifier.run_once() == 1
    finally:
        await run.stop()
    assert len(mail_sink.messages) == 1 and b"2 nouveaux documents" in mail_sink.messages[0][2].replace(b"=\r\n", b"")


async def deposit_types(running: Running, gateway: Components, doctor: Doctor, kinds: list[str]) -> None:
    """One document of each given type for `doctor`, through intake's transaction, deposited by the worker."""
    from myhug.gateway.submission import parse_submission
    from tests.helpers import accept_directly

    before = count(gateway, MailboxItem)
    for n, kind in enumerate(kinds):
        raw = message([doctor.address], document=f"DOC-{before + n}", document_type=kind)
        accept_directly(gateway, doctor.address, parse_submission(raw))
    running.worker.wake()  # type: ignore[union-attr]
    await eventually(lambda: count(gateway, MailboxItem) == before + len(kinds), what=f"{len(kinds)} deposits")


async def test_paging_keeps_the_type_filter_and_dates_are_swiss(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    await deposit_types(running, gateway, doctor, ["lab-report"] * 21 + ["discharge-letter"] * 2)
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        first = await client.get("/documents?show=all&type=lab-report")
        assert "21 documents" in first.text and "(31.01.1950)" in first.text and "1950-01-31" not in first.text
        [next_link] = re.findall(r'href="\?([^"]+)">Suivant', first.text)
        assert "type=lab-report" in next_link.replace("&amp;", "&")
        second = await client.get("/documents?" + next_link.replace("&amp;", "&"))
        assert "21 documents" in second.text and "Page 2 / 2" in second.text
        assert second.text.count('class="unread"') == 1  # the 21st lab report, not the letters


async def test_all_types_means_all_and_the_page_says_what_the_profile_hides(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    with gateway.db.transaction() as session:
        session.execute(update(Physician).where(Physician.id == doctor.id)
                        .values(preferences={"document_types": ["prescription", "discharge-letter"]}))
    await deposit_types(running, gateway, doctor, ["prescription", "lab-report", "lab-report"])
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        mine = await client.get("/documents")
        assert "1 document" in mine.text and "2 documents masqués par vos préférences" in mine.text
        assert "Types de mon profil" in mine.text
        [everything] = re.findall(r'href="\?([^"]+)">tout afficher', mine.text)
        shown = await client.get("/documents?" + everything.replace("&amp;", "&"))
        assert "3 documents" in shown.text and "masqué" not in shown.text
        all_types = await client.get("/documents?show=all&days=30&type=")  # the menu's "Tous les types"
        assert "3 documents" in all_types.text and "masqué" not in all_types.text


async def test_an_expired_session_says_so_and_comes_back_to_the_page_asked_for(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        profile = await client.get("/profile")
        assert "votre session se ferme à" in profile.text  # the warning before the idle timeout
        with gateway.db.transaction() as session:
            session.execute(update(WebSession).values(last_seen_at=utcnow() - timedelta(minutes=31)))
        csrf = CSRF_RE.search(profile.text).group(1)  # type: ignore[union-attr]
        lost = await client.post("/profile", {"notification_mode": "none"}, csrf=csrf)
        assert lost.url.path == "/login" and "Votre session a expiré" in lost.text
        assert 'name="next" value="/profile"' in lost.text
        # Logging in again (the form carries `next`, as a browser submits it) lands on that page.
        csrf = CSRF_RE.search(lost.text).group(1)  # type: ignore[union-attr]
        sms = await client.post("/login", {"login": doctor.login, "password": doctor.password, "next": "/profile"},
                                csrf=csrf)
        assert 'name="next" value="/profile"' in sms.text
        csrf = CSRF_RE.search(sms.text).group(1)  # type: ignore[union-attr]
        landed = await client.post("/login/sms", {"code": last_sms_code(gateway.settings.sms_outbox),
                                                  "next": "/profile"}, csrf=csrf)
        assert landed.url.path == "/profile" and "Dernière connexion le" in landed.text
    async with WebClient(base(running)) as client:  # a first visit: no "expired", and no open redirect
        first = await client.get("/documents")
        assert first.url.path == "/login" and "Votre session a expiré" not in first.text
        page = await client.get("/login?next=//evil.example/x")
        assert 'name="next"' not in page.text


async def test_search_sort_unread_count_and_mark_unread(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001", "P-1002"))
    await deposit(running, gateway, dpi, doctor)
    await deposit(running, gateway, dpi, doctor, document="DOC-2", patient="P-1002", patient_name="Zoé Müller",
                  patient_birthdate="1948-03-02", document_type="lab-report", subject="Résultats")
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        listing = await client.get("/documents")
        assert '<span class="badge">2<' in listing.text  # two unread, in the menu on every page
        assert "Première connexion à myHUG" in (await client.get("/documents?welcome=1")).text
        for query in ("muller", "MÜLLER zoé", "02.03.1948", "1948-03-02", "1948", "2.3.1948", "02.03.48",
                      "02/03/1948", "02.03"):
            found = await client.get("/documents?" + urlencode({"q": query}))
            assert "Résultats" in found.text and "Lettre de sortie de Jean" not in found.text, query
            assert "1 document " in found.text or "1 document<" in found.text, query
        by_patient = (await client.get("/documents?sort=patient")).text
        assert by_patient.index("Exemple Jean") < by_patient.index("Müller Zoé")  # by surname, shown first
        by_date = (await client.get("/documents")).text
        assert by_date.index("Müller Zoé") < by_date.index("Exemple Jean")  # newest first
        patients = await client.get("/patients?q=zoe")
        assert "Müller Zoé" in patients.text and "Exemple Jean" not in patients.text
        assert "Naissance : </span>02.03.1948" in patients.text  # every value labelled, phones included
        item = _first_item(gateway)
        await client.get(f"/documents/{item}/files/0")  # opened: read
        assert '<span class="badge">1<' in (await client.get("/patients")).text
        detail = await client.get(f"/documents/{item}")
        csrf = CSRF_RE.search(detail.text).group(1)  # type: ignore[union-attr]
        again = await client.post(f"/documents/{item}/unread", {}, csrf=csrf)
        assert again.url.path == "/documents" and "de nouveau marqué comme non lu" in again.text
        assert '<span class="badge">2<' in again.text
        assert (await client.get("/password/forgotten")).status_code == 200


async def test_turning_notifications_on_announces_only_what_arrives_afterwards(
    mail_sink: MailSink, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    from myhug.supervisor import start

    doctor = directory.hosted(consents=("P-1001",))
    run = await start(gateway, ("smtp", "worker", "web"))
    try:
        for n in range(4):  # four documents arrive while notifications are off
            await deposit(run, gateway, dpi, doctor, document=f"DOC-{n}")
        async with WebClient(base(run)) as client:
            await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
            csrf = await client.csrf_of("/profile")
            saved = await client.post("/profile", {"notification_mode": "each", "email": "marie.dupont@example.ch",
                                                    "landing": "documents", "documents_show": "all",
                                                    "documents_days": "30", "patients_show": "all",
                                                    "patients_days": "90"}, csrf=csrf)
            assert "Vos préférences ont été enregistrées" in saved.text
        await deposit(run, gateway, dpi, doctor, document="DOC-NEW")
        await eventually(lambda: len(mail_sink.messages) == 1, what="notification")
        await asyncio.sleep(0.5)  # nothing else may follow for the four that waited
    finally:
        await run.stop()
    assert len(mail_sink.messages) == 1
    text = mail_sink.messages[0][2].decode("utf-8", "replace")
    assert "Un nouveau document vous attend" in text and "4 nouveaux" not in text and "5 nouveaux" not in text


async def test_the_help_page_shows_the_physicians_help_without_a_login(running: Running) -> None:
    from pathlib import Path

    import httpx

    docs = Path(__file__).resolve().parents[2] / "docs" / "aide-medecins.md"
    source = Path(__file__).resolve().parents[2] / "src" / "myhug" / "webmail" / "help" / "aide-medecins.md"
    assert docs.read_text() == source.read_text()  # one text for the page and the documentation
    async with httpx.AsyncClient(base_url=base(running)) as client:
        page = await client.get("/aide")
        login = await client.get("/login")
    assert page.status_code == 200
    assert "<h2>Se connecter</h2>" in page.text and "Le code SMS n’arrive pas." in page.text
    assert 'href="/aide"' in login.text


def _suspend(gateway: Components, doctor: Doctor) -> None:
    from myhug.directory.admin import suspend

    with gateway.db.transaction() as session:
        physician = session.get(Physician, doctor.id)
        assert physician is not None
        suspend(session, physician, actor="test")


async def test_a_suspended_physician_is_told_so_after_the_right_password_only(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()
    _suspend(gateway, doctor)
    async with WebClient(base(running)) as client:
        csrf = await client.csrf_of("/login")
        wrong = await client.post("/login", {"login": doctor.login, "password": "not the password"}, csrf=csrf)
        right = await client.post("/login", {"login": doctor.login, "password": doctor.password}, csrf=csrf)
    assert wrong.status_code == 401 and "suspendu" not in wrong.text  # a guesser learns nothing
    assert right.status_code == 401 and "Votre compte myHUG est suspendu" in right.text
    assert "+41 22 372 62 01" in right.text.split("Votre compte myHUG est suspendu", 1)[1].split("</p>", 1)[0]


async def test_a_suspension_during_a_session_is_said_as_such_not_as_inactivity(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        _suspend(gateway, doctor)
        page = await client.get("/documents")
    assert page.url.path == "/login"
    assert "Votre compte myHUG est suspendu" in page.text and "inactivité" not in page.text


class CountingRelay:
    """The notifications' smarthost, counting what it is handed."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def send(self, message: object, *, sender: str, recipients: list[str], dsn: object = None) -> str:
        assert isinstance(message, bytes)
        self.messages.append(message)
        return "250 2.0.0 Ok"


def _notifications_on(gateway: Components, doctor: Doctor, mode: str = "each") -> None:
    with gateway.db.transaction() as session:
        session.execute(update(Physician).where(Physician.id == doctor.id)
                        .values(notification_mode=mode, email="marie.dupont@example.ch"))


async def test_a_burst_of_documents_gives_at_most_two_notifications_naming_how_many(
    gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    from myhug.delivery.worker import DeliveryWorker
    from myhug.mailbox.deposit import HostedMailboxAgent
    from myhug.mailbox.notify import Notifier
    from tests.helpers import accept_directly

    doctor = directory.hosted(consents=("P-1001",))
    _notifications_on(gateway, doctor)
    relay = CountingRelay()
    notifier = Notifier(gateway.db, gateway.settings, relay, lambda raw: raw)  # type: ignore[arg-type]
    queue = gateway.queue()
    worker = DeliveryWorker(queue, {"hosted": HostedMailboxAgent(queue)})  # type: ignore[dict-item]
    from myhug.gateway.submission import parse_submission

    for n in range(200):  # the notifier runs between deposits, as it is woken by each
        accept_directly(gateway, doctor.address, parse_submission(message([doctor.address], document=f"DOC-{n}")))
        await worker.run_once()
        await notifier.run_once()
    queue.outcomes.close()
    assert len(relay.messages) == 1  # the first document's; the others wait for notify_min_interval
    with gateway.db.transaction() as session:  # ten minutes later
        session.execute(update(Physician).values(digest_sent_at=utcnow() - timedelta(minutes=10)))
    assert await notifier.run_once() == 1 and await notifier.run_once() == 0
    assert len(relay.messages) == 2
    second = relay.messages[1].decode().replace("=\n", "").replace("=\r\n", "")
    assert "199 nouveaux documents vous attendent" in second and "Pour les consulter" in second
    first = relay.messages[0].decode()
    assert "Un nouveau document vous attend" in first and "Pour le consulter" in first
    assert re.search(r"^Date: .* \+0[12]00$", first, re.M), "Geneva's offset, not -0000"


async def test_switching_to_the_digest_stops_immediate_mails_at_once(
    gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    from myhug.delivery.worker import DeliveryWorker
    from myhug.mailbox.deposit import HostedMailboxAgent
    from myhug.mailbox.notify import Notifier
    from tests.helpers import accept_directly

    doctor = directory.hosted(consents=("P-1001",))
    _notifications_on(gateway, doctor)
    queue = gateway.queue()
    worker = DeliveryWorker(queue, {"hosted": HostedMailboxAgent(queue)})  # type: ignore[dict-item]
    accept_directly(gateway, doctor.address)
    await worker.run_once()
    queue.outcomes.close()

    class SwitchingRelay(CountingRelay):
        """The physician switches to the daily digest after the notifier claimed the document."""

        switched = False

    relay = SwitchingRelay()
    notifier = Notifier(gateway.db, gateway.settings, relay, lambda raw: raw)  # type: ignore[arg-type]
    claim = notifier.claim

    def claim_then_switch(limit: int = 200) -> list:  # type: ignore[type-arg]
        due = claim(limit)
        _notifications_on(gateway, doctor, "digest")
        return due

    notifier.claim = claim_then_switch  # type: ignore[method-assign]
    assert await notifier.run_once() == 0 and relay.messages == []
    with gateway.db.reading() as session:  # given back, for tomorrow's digest
        assert session.scalars(select(MailboxItem.lease_owner)).all() == [None]


async def test_tout_afficher_shows_every_document_the_profile_hides_read_ones_included(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    with gateway.db.transaction() as session:
        session.execute(update(Physician).where(Physician.id == doctor.id)
                        .values(preferences={"document_types": ["lab-report"], "documents_show": "unread"}))
    await deposit_types(running, gateway, doctor, ["lab-report"] * 3 + ["discharge-letter"] * 2)
    with gateway.db.transaction() as session:  # one lab report already read
        first = session.scalars(select(MailboxItem).order_by(MailboxItem.id)).first()
        assert first is not None
        first.read_at = utcnow()
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        mine = await client.get("/documents")
        assert "2 documents" in mine.text and "3 documents masqués par vos préférences" in mine.text
        [everything] = re.findall(r'href="\?([^"]+)">tout afficher', mine.text)
        shown = await client.get("/documents?" + everything.replace("&amp;", "&"))
    assert "5 documents" in shown.text and "masqué" not in shown.text


async def test_small_defects_of_the_walk(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    """A code with letters, a page past the last, the unread button, the password page's focus, the
    profile's type boxes, the bookmark hint."""
    doctor = directory.hosted(consents=("P-1001",))
    await deposit(running, gateway, dpi, doctor)
    async with WebClient(base(running)) as client:
        login = await client.get("/login")
        assert "remplacez l’adresse de cette page par" in login.text and 'href="http://myhug.hin.ch"' in login.text
        csrf = await client.csrf_of("/login")
        await client.post("/login", {"login": doctor.login, "password": doctor.password}, csrf=csrf)
        csrf = await client.csrf_of("/login/sms")
        typo = await client.post("/login/sms", {"code": "12ab"}, csrf=csrf)
        assert typo.status_code == 401 and "Le code a 6 chiffres" in typo.text and "Code incorrect" not in typo.text
        page = await client.post("/login/sms", {"code": last_sms_code(gateway.settings.sms_outbox)}, csrf=csrf)
        assert page.url.path == "/documents"  # the typo did not use up the code
        far = await client.get("/documents?page=999")
        assert "Page 999" not in far.text and far.url.params.get("page") == "1"
        item = _first_item(gateway)
        unread = await client.get(f"/documents/{item}")
        assert "Marquer comme non lu" not in unread.text  # still unread: nothing to mark
        await client.get(f"/documents/{item}/files/0")
        assert "Marquer comme non lu" in (await client.get(f"/documents/{item}")).text
        password = await client.get("/password")
        assert re.search(r'<input id="current"[^>]*autofocus', password.text)
        profile = await client.get("/profile")
        assert re.search(r"<fieldset class=\"types\">\s*<legend>Types affichés", profile.text)


async def test_who_sent_it_is_shown_searched_and_filtered_and_never_in_clear(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001", "P-1002"))
    await deposit(running, gateway, dpi, doctor, author="Dre Claire Roux", department="Service de cardiologie")
    await deposit(running, gateway, dpi, doctor, document="DOC-2", patient="P-1002", department="Service de néphrologie",
                  subject="Bilan rénal")
    with gateway.db.reading() as session:  # sealed: nowhere in a clear column
        from myhug.delivery.models import Submission

        for submission in session.scalars(select(Submission)):
            assert "cardiologie" not in json.dumps([str(v) for v in vars(submission).values()])
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        listing = await client.get("/documents")
        assert "Service de cardiologie" in listing.text and "Dre Claire Roux" in listing.text
        found = await client.get("/documents?" + urlencode({"q": "cardio"}))
        assert "Lettre de sortie de Jean" in found.text and "Bilan rénal" not in found.text
        filtered = await client.get("/documents?" + urlencode({"department": "Service de néphrologie"}))
        assert "Bilan rénal" in filtered.text and "Lettre de sortie de Jean" not in filtered.text
        detail = await client.get(f"/documents/{_first_item(gateway)}")
        assert "<dt>Service</dt><dd>Service de cardiologie</dd>" in detail.text and "Dre Claire Roux" in detail.text
