"""The webmail in a real Chromium (Debian's, driven by Playwright): registration to reading."""

from __future__ import annotations

import email
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy import select

from myhug.audit.models import AuditEvent
from myhug.components import Components
from myhug.config.settings import Settings
from myhug.directory.identifiers import make_gln
from myhug.directory.service import DpiCredentials
from myhug.mailbox.models import MailboxItem
from myhug.supervisor import Running
from tests.conftest import MailSink
from tests.helpers import PDF, count, eventually, message, myhug, send
from tests.helpers import web_base as base
from tests.hin_proxy import hin_headers, hin_proxy
from tests.webmail_flow import last_sms_code

pytestmark = pytest.mark.once  # the browser's side: run on one backend (tests/conftest.py)

ARTIFACTS = Path(os.environ.get("MYHUG_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)




async def test_registered_physician_activates_and_reads_the_document(
    dpi_mail: MailSink, running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials, browser: Browser
) -> None:
    gln = make_gln("760100000555")
    out = myhug(settings, "physician", "add", "--gln", gln, "--name", "Marie Dupont", "--mobile", "079 123 45 67").stdout
    login = out.split("login: ", 1)[1].split()[0]
    temporary = out.split("temporary password: ", 1)[1].split()[0]
    myhug(settings, "consent", "grant", "P-1001", gln)

    page = await (await browser.new_context(accept_downloads=True)).new_page()
    await page.goto(base(running) + "/login")
    await shot(page, "01-login")
    await page.get_by_label("Identifiant").fill(login)
    await page.get_by_label("Mot de passe").fill(temporary)
    await page.get_by_role("button", name="Continuer").click()
    await page.wait_for_url("**/login/sms")
    await shot(page, "02-login-sms")
    await page.get_by_label("Code reçu par SMS").fill(last_sms_code(settings.sms_outbox))
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url("**/password")
    await shot(page, "03-password-first-login")
    await page.get_by_label("Mot de passe temporaire").fill(temporary)
    await page.locator("#new").fill("une phrase de passe solide")
    await page.locator("#confirm").fill("une phrase de passe solide")
    await page.get_by_role("button", name="Enregistrer").click()
    await page.wait_for_url("**/documents?info=password")

    # Now activated, the physician is a valid recipient: the DPI submits over SMTP.
    address = f"{login}@{settings.mail.domain}"
    code, text = await send(running, gateway, (dpi.username, dpi.password), message([address]), [address])
    assert code == 250, text
    await eventually(lambda: count(gateway, MailboxItem) == 1, what="deposit")

    await page.goto(base(running) + "/documents")
    await shot(page, "04-mes-documents")
    await page.get_by_role("link", name="Lettre de sortie de Jean Exemple").click()
    await page.wait_for_url("**/documents/*")
    await shot(page, "05-document")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Télécharger").click()
    download = await download_info.value
    assert Path(await download.path()).read_bytes() == PDF
    assert download.suggested_filename == "lettre.pdf"
    with gateway.db.transaction() as session:
        read = session.scalars(select(AuditEvent).where(AuditEvent.event == "read")).all()
        assert [e.physician_gln for e in read] == [gln]

    def dpi_events() -> list[str]:
        return [str(email.message_from_bytes(raw)["X-MyHUG-Event"]) for _, _, raw in dpi_mail.messages]

    # The DPI gets its receipts, the "read" one included.
    await eventually(lambda: "read" in dpi_events(), what="read receipt to the DPI")
    assert {"accepted", "deposited", "read"} <= set(dpi_events())

    await page.goto(base(running) + "/patients")
    await shot(page, "06-mes-patients")
    assert await page.get_by_role("link", name="Exemple Jean").count() == 1  # surname first, as sorted

    # Mon profil: the landing page becomes "Mes patients".
    await page.goto(base(running) + "/profile")
    await page.get_by_label("Mes patients", exact=True).check()
    await page.get_by_label("Pédiatrie", exact=True).check()
    await page.get_by_role("button", name="Enregistrer").click()
    await page.wait_for_selector("text=Vos préférences ont été enregistrées.")
    await shot(page, "07-mon-profil")
    await page.get_by_role("button", name="Se déconnecter").click()
    await page.wait_for_url("**/login?info=logout")
    await page.get_by_label("Identifiant").fill(login)
    await page.get_by_label("Mot de passe").fill("une phrase de passe solide")
    await page.get_by_role("button", name="Continuer").click()
    await page.wait_for_url("**/login/sms")
    await page.get_by_label("Code reçu par SMS").fill(last_sms_code(settings.sms_outbox))
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url("**/patients?welcome=1")

    # The same pages on a phone.
    phone = await (await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)).new_page()
    await phone.goto(base(running) + "/login")
    await shot(phone, "08-login-phone")
    assert await phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


async def test_hin_login_in_the_browser_through_the_access_gateway(
    running: Running, gateway: Components, browser: Browser
) -> None:
    gln = make_gln("760100000666")
    async with hin_proxy(base(running), hin_headers(gln)) as proxy:
        page = await browser.new_page()
        await page.goto(proxy + "/hin/login")
        await page.wait_for_url("**/documents?welcome=*")
        assert await page.get_by_text("Dr Marie Dupont").count() == 1
        await shot(page, "09-hin-login")
    page = await browser.new_page()
    response = await page.goto(base(running) + "/hin/login")  # no proxy: no identity
    assert response is not None and response.status == 403


async def test_newcomer_follows_the_demo_printout_and_reads_a_document(tmp_path: Path, browser: Browser) -> None:
    import re
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MYHUG_")}
    demo = subprocess.Popen([sys.executable, "-m", "myhug.cli", "demo"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert demo.stdout is not None
        printout = ""
        for line in demo.stdout:
            printout += line
            if "keeps running" in line:
                break
        url = re.search(r"Open (http://\S+/login)", printout)
        creds = re.search(r"Log in as (\S+) with password (\S+)", printout)
        outbox = re.search(r"last line of (\S+)", printout)
        assert url and creds and outbox, printout
        page = await browser.new_page()
        await page.goto(url.group(1))
        await page.get_by_label("Identifiant").fill(creds.group(1))
        await page.get_by_label("Mot de passe").fill(creds.group(2))
        await page.get_by_role("button", name="Continuer").click()
        await page.wait_for_url("**/login/sms")
        code = Path(outbox.group(1)).read_text().splitlines()[-1].split("\t")[1]
        await page.get_by_label("Code reçu par SMS").fill(re.search(r"\b(\d{6})\b", code).group(1))  # type: ignore[union-attr]
        await page.get_by_role("button", name="Se connecter").click()
        await page.wait_for_url("**/documents?welcome=*")
        assert await page.locator(".doclist li").count() == 2
        await page.locator(".doclist a").first.click()
        await page.wait_for_url("**/documents/*")
        link = page.get_by_role("link", name=re.compile("^Ouvrir"))
        from urllib.parse import urljoin

        response = await page.request.get(urljoin(page.url, await link.get_attribute("href") or ""))
        assert response.status == 200 and (await response.body()).startswith(b"%PDF")
        # The printed API call works too.
        import httpx

        token = re.search(r"Bearer (\S+)'", printout).group(1)  # type: ignore[union-attr]
        api_url = re.search(r"'(http://\S+/api/v1/practitioners\?name=dupont)'", printout).group(1)  # type: ignore[union-attr]
        async with httpx.AsyncClient() as client:
            found = (await client.get(api_url, headers={"Authorization": f"Bearer {token}"})).json()
        assert [e["resource"]["name"][0]["family"] for e in found["entry"]
                if e["resource"]["resourceType"] == "Practitioner"] == ["Dupont"]
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=30)
    assert demo.returncode in (0, 130)
