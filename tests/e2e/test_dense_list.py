"""The desktop list is dense, as a mail client's: at 1280×800, a dozen documents or more without scrolling, one line
each, the filters on one row; the phone keeps its cards."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.directory.service import DpiCredentials
from myhug.supervisor import Running
from tests.conftest import Directory
from tests.e2e.test_webmail_browser import browser  # noqa: F401  (fixture)
from tests.helpers import web_base as base
from tests.integration.test_webmail import deposit_types
from tests.webmail_flow import browser_sms_login

pytestmark = pytest.mark.once  # the browser's side: run on one backend (tests/conftest.py)


async def test_at_least_twelve_documents_fit_above_the_fold_on_a_desktop_one_line_each(
    running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials, directory: Directory,
    browser: Browser,  # noqa: F811
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    await deposit_types(running, gateway, doctor, ["lab-report"] * 20)
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await browser_sms_login(page, base(running), settings.sms_outbox, doctor.login or "", doctor.password)
    visible = await page.evaluate("() => [...document.querySelectorAll('.doclist li')]"
                                  ".filter(li => li.getBoundingClientRect().bottom <= window.innerHeight).length")
    assert visible >= 12, f"{visible} documents visible at 1280×800"
    heights = await page.evaluate("() => [...document.querySelectorAll('.doclist li')].map(li => li.offsetHeight)")
    assert max(heights) < 48, heights  # one line each
    tops = await page.evaluate("() => new Set([...document.querySelectorAll('.filters .field, .filters button')]"
                               ".map(e => Math.round(e.getBoundingClientRect().bottom))).size")
    assert tops == 1, "the filters are on one row"
    await page.set_viewport_size({"width": 390, "height": 844})
    card = await page.evaluate("() => document.querySelector('.doclist li').offsetHeight")
    assert card > 60  # the phone keeps its cards: patient, title and details on lines of their own
    await context.close()
