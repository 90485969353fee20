"""Webmail login steps shared by the integration and browser tests."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page

from tests.webclient import WebClient


def last_sms_code(outbox: Path, mobile: str = "+41791234567") -> str:
    lines = [line for line in outbox.read_text().splitlines() if line.startswith(mobile + "\t")]
    assert lines, f"no SMS to {mobile} in {outbox}"
    text = lines[-1].split("\t", 1)[1]
    return next(word for word in text.replace(".", " ").split() if word.isdigit() and len(word) == 6)


async def login_sms(client: WebClient, outbox: Path, login: str, password: str,
                    mobile: str = "+41791234567") -> str:
    """Password then SMS code; returns the path the login lands on."""
    csrf = await client.csrf_of("/login")
    page = await client.post("/login", {"login": login, "password": password}, csrf=csrf)
    assert page.status_code == 200 and "Code SMS" in page.text, page.text[:300]
    csrf = await client.csrf_of("/login/sms")
    page = await client.post("/login/sms", {"code": last_sms_code(outbox, mobile)}, csrf=csrf)
    assert page.status_code == 200, page.text[:300]
    return page.url.path


async def browser_sms_login(page: Page, base: str, outbox: Path, login: str, password: str,
                            mobile: str = "+41791234567", landing: str = "**/documents**") -> None:
    """In a browser: the login page, the password, the SMS code, until the page after the login."""
    await page.goto(base + "/login")
    await page.get_by_label("Identifiant").fill(login)
    await page.get_by_label("Mot de passe").fill(password)
    await page.get_by_role("button", name="Continuer").click()
    await page.wait_for_url("**/login/sms")
    await page.get_by_label("Code reçu par SMS").fill(last_sms_code(outbox, mobile))
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url(landing)


async def browser_first_password(page: Page, temporary: str, new: str) -> None:
    """In a browser, on the first login's password page: the temporary password replaced by `new`."""
    await page.get_by_label("Mot de passe temporaire").fill(temporary)
    await page.locator("#new").fill(new)
    await page.locator("#confirm").fill(new)
    await page.get_by_role("button", name="Enregistrer").click()
