"""'Faire confiance à cet appareil': the next logins on that browser skip the SMS code, never the password,
until the physician revokes it, changes the password, is suspended, is reset at the desk, or it expires."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from sqlalchemy import select, update

from myhug.components import Components
from myhug.db.base import utcnow
from myhug.directory import admin
from myhug.directory.models import Physician
from myhug.supervisor import Running
from myhug.websecurity.devices import DEVICE_COOKIE, browser_label
from myhug.websecurity.models import TrustedDevice
from tests.conftest import PASSWORD, Directory, Doctor
from tests.helpers import web_base as base
from tests.integration.test_webmail import events
from tests.webclient import WebClient
from tests.webmail_flow import last_sms_code

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def sms_count(gateway: Components) -> int:
    outbox = gateway.settings.sms_outbox
    return len(outbox.read_text().splitlines()) if outbox.exists() else 0


async def password_step(client: WebClient, doctor: Doctor, password: str = PASSWORD) -> str:
    """The password step; the path it leads to (/login/sms, or straight in on a trusted device)."""
    csrf = await client.csrf_of("/login")
    page = await client.post("/login", {"login": doctor.login, "password": password}, csrf=csrf)
    return page.url.path


async def trusting_login(client: WebClient, gateway: Components, doctor: Doctor) -> None:
    assert await password_step(client, doctor) == "/login/sms"
    form = (await client.get("/login/sms")).text
    assert "Faire confiance à cet appareil pendant 30 jours" in form
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    page = await client.post("/login/sms", {"code": last_sms_code(gateway.settings.sms_outbox), "trust": "1"},
                             csrf=csrf)
    assert page.url.path == "/documents"
    assert DEVICE_COOKIE in client.cookies


async def log_out(client: WebClient) -> None:
    csrf = await client.csrf_of("/documents")
    await client.post("/logout", {}, csrf=csrf)


async def test_a_trusted_browser_skips_the_sms_code_never_the_password(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()
    async with WebClient(base(running)) as client:
        client.http.headers["User-Agent"] = CHROME
        await trusting_login(client, gateway, doctor)
        header = next(h for h in client.set_cookie_headers if h.startswith(DEVICE_COOKIE))
        assert "Secure" in header and "HttpOnly" in header and "samesite=strict" in header.lower()
        assert "Max-Age=2592000" in header  # 30 days
        await log_out(client)
        sent = sms_count(gateway)
        assert await password_step(client, doctor, "wrong password") == "/login"  # the password is still asked
        assert await password_step(client, doctor) == "/documents"  # and it is the only step
        assert sms_count(gateway) == sent
        page = (await client.get("/profile/acces")).text
        assert "Chrome sur Windows" in page and "Retirer la confiance" in page
    with gateway.db.transaction() as session:
        [device] = session.scalars(select(TrustedDevice)).all()
        assert len(device.token_hash) == 64 and device.token_hash not in str(client.cookies)  # stored hashed
    assert [json.loads(e.detail) for e in events(gateway, "device-trusted")][0]["label"] == "Chrome sur Windows"
    logins = [json.loads(e.detail)["via"] for e in events(gateway, "login")]
    assert logins == ["sms", "password+trusted-device"]

    # Another physician's password on this browser: the trust is not theirs.
    other = directory.hosted(family_name="Favre", mobile="+41791234568")
    async with WebClient(base(running)) as stranger:
        stranger.cookies[DEVICE_COOKIE] = client.cookies[DEVICE_COOKIE]
        assert await password_step(stranger, other) == "/login/sms"


async def test_the_trust_ends_when_revoked_on_a_password_change_a_suspension_a_desk_reset_or_expiry(
    running: Running, gateway: Components, directory: Directory
) -> None:
    doctor = directory.hosted()

    async def trusted_client() -> WebClient:
        client = WebClient(base(running))
        await trusting_login(client, gateway, doctor)
        await log_out(client)
        assert await password_step(client, doctor) == "/documents"
        return client

    # 1. Revoked by the physician in "Connexion et sécurité".
    client = await trusted_client()
    page = (await client.get("/profile/acces")).text
    device_id = re.search(r'/profile/acces/devices/(\d+)/revoke', page).group(1)  # type: ignore[union-attr]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    revoked = await client.post(f"/profile/acces/devices/{device_id}/revoke", {}, csrf=csrf)
    assert "n’est plus de confiance" in revoked.text
    await log_out(client)
    assert await password_step(client, doctor) == "/login/sms"
    await client.__aexit__()

    # 2. A password change.
    client = await trusted_client()
    csrf = await client.csrf_of("/password")
    await client.post("/password", {"current": PASSWORD, "new": "une autre phrase solide", "confirm":
                                    "une autre phrase solide"}, csrf=csrf)
    client.cookies.pop("__Host-myhug", None)
    assert await password_step(client, doctor, "une autre phrase solide") == "/login/sms"
    await client.__aexit__()
    doctor = Doctor(doctor.id, doctor.gln, doctor.address, doctor.login, "une autre phrase solide")

    async def trusted_again() -> WebClient:
        client = WebClient(base(running))
        assert await password_step(client, doctor, doctor.password) == "/login/sms"
        form = (await client.get("/login/sms")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
        await client.post("/login/sms", {"code": last_sms_code(gateway.settings.sms_outbox), "trust": "1"}, csrf=csrf)
        await log_out(client)
        assert await password_step(client, doctor, doctor.password) == "/documents"
        await log_out(client)
        return client

    # 3. A suspension (then reactivation: the trust does not come back).
    client = await trusted_again()
    with gateway.db.transaction() as session:
        admin.apply(session, "suspend", doctor.gln, actor="staff:test")
        admin.apply(session, "reactivate", doctor.gln, actor="staff:test")
    assert await password_step(client, doctor, doctor.password) == "/login/sms"
    await client.__aexit__()

    # 4. Expiry (the row back-dated).
    client = await trusted_again()
    with gateway.db.transaction() as session:
        session.execute(update(TrustedDevice).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert await password_step(client, doctor, doctor.password) == "/login/sms"
    await client.__aexit__()

    # 5. A reset at the desk.
    client = await trusted_again()
    with gateway.db.transaction() as session:
        temporary = admin.apply(session, "reset-password", doctor.gln, actor="staff:test").temporary_password
        assert session.scalar(select(Physician.password_must_change).where(Physician.id == doctor.id))
    assert await password_step(client, doctor, temporary or "") == "/login/sms"
    await client.__aexit__()

    reasons = [json.loads(e.detail)["reason"] for e in events(gateway, "device-revoked")]
    assert reasons == ["physician", "password-changed", "suspended", "password-reset"]


def test_a_device_is_named_by_its_browser_and_system() -> None:
    assert browser_label(CHROME) == "Chrome sur Windows"
    assert browser_label("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
                         "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1") == "Safari sur iPhone"
    assert browser_label("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0") == "Firefox sur Linux"
    assert browser_label("") == "Navigateur"
