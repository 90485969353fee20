"""What a busy practice does with the list, in Chromium: bulk actions with and without JavaScript, the PDF preview."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.directory.service import DpiCredentials
from myhug.supervisor import Running
from tests.conftest import Directory, Doctor
from tests.e2e.test_webmail_browser import browser  # noqa: F401  (fixture)
from tests.helpers import web_base as base
from tests.integration.test_webmail import deposit, events
from tests.webmail_flow import browser_sms_login

pytestmark = pytest.mark.once  # the browser's side: run on one backend (tests/conftest.py)


async def logged_in(context: BrowserContext, running: Running, settings: Settings, doctor: Doctor) -> Page:
    page = await context.new_page()
    await browser_sms_login(page, base(running), settings.sms_outbox, doctor.login or "", doctor.password)
    return page


async def unread_badge(page: Page) -> str:
    badge = page.locator("nav .badge")
    return (await badge.inner_text()).split()[0] if await badge.count() else "0"


async def test_bulk_actions_work_with_and_without_javascript_at_both_sizes(
    running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials, directory: Directory,
    browser: Browser,  # noqa: F811
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    for n in range(4):
        await deposit(running, gateway, dpi, doctor, document=f"DOC-{n}", subject=f"Rapport {n}")
    for javascript, size in ((False, {"width": 1280, "height": 800}), (True, {"width": 390, "height": 844})):
        context = await browser.new_context(java_script_enabled=javascript, viewport=size)
        page = await logged_in(context, running, settings, doctor)
        await page.get_by_role("button", name="Tout marquer comme lu").click()
        await page.wait_for_url("**info=all-seen**")
        assert await unread_badge(page) == "0"
        # Select all (in place with JavaScript, by a reload without), then mark the selection as new again.
        await page.get_by_text("Tout sélectionner").click()
        if not javascript:
            await page.wait_for_url("**select=all**")
        else:  # ticked in place, no reload
            assert "select=all" not in page.url and await page.get_by_text("Tout désélectionner").is_visible()
        boxes = page.locator('input[name="item"]')
        assert await boxes.count() == 4
        assert all([await boxes.nth(n).is_checked() for n in range(4)])
        await page.get_by_role("button", name="Marquer comme non lu").click()
        await page.wait_for_url("**info=unseen**")
        assert await unread_badge(page) == "4"
        # Two ticked by hand, marked as read.
        await page.get_by_label("Choisir : Exemple Jean, Rapport 0").check()
        await page.get_by_label("Choisir : Exemple Jean, Rapport 1").check()
        await page.get_by_role("button", name="Marquer comme lu", exact=True).click()
        await page.wait_for_url("**info=seen**")
        assert await unread_badge(page) == "2"
        await context.close()
    assert events(gateway, "read") == []  # marking is not reading: no receipt went to the DPI


async def test_a_pdf_is_previewed_in_the_page_on_a_desktop_and_not_fetched_on_a_phone(
    running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials, directory: Directory,
    browser: Browser,  # noqa: F811
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    await deposit(running, gateway, dpi, doctor)
    phone = await browser.new_context(viewport={"width": 390, "height": 844})
    page = await logged_in(phone, running, settings, doctor)
    await page.get_by_role("link", name="Lettre de sortie de Jean Exemple").click()
    await page.wait_for_url("**/documents/*")
    await page.wait_for_timeout(1000)
    assert not await page.locator(".preview iframe").is_visible()
    assert events(gateway, "read") == []  # the hidden frame was not fetched: nothing was read
    await phone.close()

    desktop = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await logged_in(desktop, running, settings, doctor)
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Refused" in m.text else None)
    await page.get_by_role("link", name="Lettre de sortie de Jean Exemple").click()
    await page.wait_for_url("**/documents/*")
    frame = page.frame_locator(".preview iframe")
    assert await page.locator(".preview iframe").is_visible()
    await page.wait_for_function("() => document.querySelector('.preview iframe').getBoundingClientRect().height > 300")
    # Chromium's own viewer opened the file inside the frame: its extension's page is among the frames.
    for _ in range(50):
        if any(f.url.startswith("chrome-extension://") for f in page.frames):
            break
        await page.wait_for_timeout(100)
    assert any(f.url.startswith("chrome-extension://") for f in page.frames), [f.url for f in page.frames]
    assert refused == []
    assert frame is not None
    assert len(events(gateway, "read")) == 1  # seeing it is reading it
    await desktop.close()
