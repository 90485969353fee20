"""Passkeys in Chromium, through its virtual authenticator (CDP `WebAuthn.*`): add one after a password + SMS
login, log in with it alone, and see a removed passkey and a cloned one (its counter going back) refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page
from sqlalchemy import select, update

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.directory import admin
from myhug.supervisor import Running
from myhug.websecurity.models import Passkey
from tests.conftest import Directory, Doctor
from tests.e2e.test_webmail_browser import browser  # noqa: F401  (fixture)
from tests.helpers import web_base
from tests.integration.test_webmail import events
from tests.webmail_flow import browser_first_password, browser_sms_login

pytestmark = pytest.mark.once  # the browser's side: run on one backend (tests/conftest.py)


def site(running: Running) -> str:
    """The webmail at http://localhost:PORT: a relying party id must be a domain name, never an address."""
    return web_base(running).replace("127.0.0.1", "localhost")


async def with_authenticator(context: BrowserContext) -> tuple[Page, Any, str]:
    """A page whose browser has a platform authenticator that verifies its user (as a fingerprint would)."""
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    return page, cdp, added["authenticatorId"]


async def sms_login(page: Page, running: Running, settings: Settings, doctor: Doctor) -> None:
    await browser_sms_login(page, site(running), settings.sms_outbox, doctor.login or "", doctor.password)


async def passkey_login(page: Page, running: Running) -> None:
    await page.context.clear_cookies()
    await page.goto(site(running) + "/login")
    await page.get_by_role("button", name="Se connecter avec une clé d’accès").click()


async def test_a_passkey_is_added_after_a_full_login_then_logs_in_alone_and_removed_or_cloned_ones_are_refused(
    running: Running, gateway: Components, settings: Settings, directory: Directory,
    browser: Browser,  # noqa: F811
) -> None:
    settings.web.public_url = site(running)
    doctor = directory.hosted()
    context = await browser.new_context()
    page, cdp, authenticator = await with_authenticator(context)

    await sms_login(page, running, settings, doctor)
    await page.goto(site(running) + "/profile")
    await page.get_by_role("link", name="Connexion et sécurité").click()
    await page.get_by_label("Nom de la clé (facultatif)").fill("Ordinateur du cabinet")
    await page.get_by_role("button", name="Ajouter une clé d’accès").click()
    await page.wait_for_url("**info=passkey-added")
    assert "Ordinateur du cabinet" in await page.locator("table").inner_text()
    credentials = (await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator}))["credentials"]
    assert len(credentials) == 1 and credentials[0]["isResidentCredential"]

    # The passkey alone: no login, no password, no SMS code.
    sms_before = gateway.settings.sms_outbox.read_text().count("\n")
    await passkey_login(page, running)
    await page.wait_for_url("**/documents**")
    assert "Dr Marie Dupont" in await page.locator(".who").inner_text()
    assert gateway.settings.sms_outbox.read_text().count("\n") == sms_before
    logins = [json.loads(e.detail) for e in events(gateway, "login")]
    assert logins[-1]["via"] == "passkey" and logins[-1]["authenticator"] == "platform"
    assert [json.loads(e.detail)["authenticator"] for e in events(gateway, "passkey-added")] == ["platform"]
    # A session opened by passkey cannot add another one (that needs the password and a fresh SMS code).
    await page.goto(site(running) + "/profile/acces")
    assert await page.get_by_role("button", name="Ajouter une clé d’accès").count() == 0

    # A cloned authenticator: its counter goes back (the server saw a higher one).
    with gateway.db.transaction() as session:
        session.execute(update(Passkey).values(sign_count=1000))
    await passkey_login(page, running)
    await page.wait_for_selector("#passkey-status:has-text('pas reconnue')")
    assert "/login" in page.url
    failed = [json.loads(e.detail) for e in events(gateway, "login-failed")]
    assert failed[-1]["step"] == "passkey" and "sign count" in failed[-1]["reason"].lower()

    # Removed at the desk (a lost phone): refused, though the authenticator still holds it.
    with gateway.db.transaction() as session:
        session.execute(update(Passkey).values(sign_count=0))
        admin.apply(session, "remove-passkeys", doctor.gln, actor="staff:test")
        assert session.scalars(select(Passkey)).all() == []
    await passkey_login(page, running)
    await page.wait_for_selector("#passkey-status:has-text('pas reconnue')")
    assert "/login" in page.url
    assert len(events(gateway, "passkey-removed")) == 1
    await context.close()


async def test_the_physician_removes_a_passkey_and_without_public_url_none_is_offered(
    running: Running, gateway: Components, settings: Settings, directory: Directory,
    browser: Browser,  # noqa: F811
) -> None:
    doctor = directory.hosted()
    context = await browser.new_context()
    page, _, _ = await with_authenticator(context)
    await page.goto(site(running) + "/login")  # web.public_url unset: no passkey button
    assert await page.get_by_role("button", name="Se connecter avec une clé d’accès").count() == 0
    settings.web.public_url = site(running)
    await sms_login(page, running, settings, doctor)
    await page.goto(site(running) + "/profile/acces")
    await page.get_by_role("button", name="Ajouter une clé d’accès").click()
    await page.wait_for_url("**info=passkey-added")
    await page.get_by_role("button", name="Supprimer la clé d’accès").click()
    await page.wait_for_url("**info=passkey-removed")
    assert "Aucune clé d’accès" in await page.locator("main").inner_text()
    await passkey_login(page, running)
    await page.wait_for_selector("#passkey-status:has-text('pas reconnue')")
    await context.close()


async def test_an_assistant_adds_a_passkey_and_logs_in_with_it_alone(
    running: Running, gateway: Components, settings: Settings, directory: Directory,
    browser: Browser,  # noqa: F811
) -> None:
    from myhug.directory.delegation import register_assistant

    settings.web.public_url = site(running)
    doctor = directory.hosted(family_name="Aubert")
    with gateway.db.transaction() as session:
        made = register_assistant(session, given_name="Claire", family_name="Rochat", mobile="+41797654321",
                                  physician_glns=[doctor.gln], actor="test")
    context = await browser.new_context()
    page, _, _ = await with_authenticator(context)
    await browser_sms_login(page, site(running), settings.sms_outbox, made.assistant.login, made.temporary_password,
                            "+41797654321", landing="**/password")
    await browser_first_password(page, made.temporary_password, "assistante du cabinet 2026")
    await page.wait_for_url("**/documents**")
    await page.get_by_role("link", name="Clés d’accès").click()
    assert await page.get_by_text("Appareils de confiance").count() == 0  # a physician's choice only
    await page.get_by_role("button", name="Ajouter une clé d’accès").click()
    await page.wait_for_url("**info=passkey-added")
    await passkey_login(page, running)
    await page.wait_for_url("**/documents**")
    assert "Documents de Dr Marie Aubert" in await page.locator("h1").inner_text()
    logins = [json.loads(e.detail) for e in events(gateway, "login")]
    assert logins[-1] == {"via": "passkey", "authenticator": "platform", "passkey": logins[-1]["passkey"],
                          "assistant": made.assistant.login}
    with gateway.db.transaction() as session:
        [passkey] = session.scalars(select(Passkey)).all()
        assert passkey.assistant_id == made.assistant.id and passkey.physician_id is None
    await context.close()
