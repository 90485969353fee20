"""The physician's journey of the webmail issue in Chromium, at phone size and at desktop size: each item
as a physician meets it, with a screenshot of each step."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import update

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.db.base import utcnow
from myhug.directory.service import DpiCredentials
from myhug.supervisor import Running
from myhug.websecurity.models import WebSession
from tests.conftest import Directory
from tests.e2e.test_every_page import SIZES
from tests.e2e.test_webmail_browser import browser, shot  # noqa: F401  (fixture)
from tests.helpers import web_base as base
from tests.integration.test_webmail import deposit
from tests.webmail_flow import last_sms_code

pytestmark = pytest.mark.once  # the browser's side: run on one backend (tests/conftest.py)


async def log_in(page: Page, web: str, login: str, password: str, settings: Settings) -> None:
    await page.get_by_label("Identifiant").fill(login)
    await page.get_by_label("Mot de passe").fill(password)
    await page.get_by_role("button", name="Continuer").click()
    await page.wait_for_url("**/login/sms**")
    assert await page.get_by_text("Étape 2 sur 2").count() == 1
    # The code field has the focus: the physician types the code at once.
    assert await page.evaluate("() => document.activeElement.id") == "code"
    await page.keyboard.type(last_sms_code(settings.sms_outbox))
    await page.get_by_role("button", name="Se connecter").click()


@pytest.mark.parametrize("size", sorted(SIZES))
async def test_the_physicians_journey(
    running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials, directory: Directory,
    browser: Browser, size: str,  # noqa: F811
) -> None:
    width, height = SIZES[size]
    doctor = directory.hosted(consents=("P-1001", "P-1002"))
    await deposit(running, gateway, dpi, doctor)
    await deposit(running, gateway, dpi, doctor, document="DOC-2", patient="P-1002", patient_name="Zoé Martin",
                  patient_birthdate="1948-03-02", document_type="lab-report", subject="Résultats de laboratoire")
    web = base(running)
    page = await (await browser.new_context(viewport={"width": width, "height": height})).new_page()
    await page.goto(web + "/documents")
    await page.wait_for_url("**/login?next=**")
    await log_in(page, web, doctor.login or "", doctor.password, settings)
    await page.wait_for_url("**/documents?welcome=1")
    # Back on the page asked for; the menu counts what is unread; the patient comes first on each line.
    assert await page.get_by_text("Première connexion à myHUG").count() == 1
    assert (await page.locator(".badge").inner_text()).startswith("2")
    assert (await page.locator(".doclist li .patient").first.inner_text()).startswith("Martin Zoé (02.03.1948)")
    await shot(page, f"journey-{size}-1-documents")

    # Search by birth date, then by a name typed without its accent.
    await page.get_by_label("Patient").fill("02.03.1948")
    # A click starts the search's navigation; `expect` waits for its page (a bare count could read the old one).
    await page.get_by_role("button", name="Afficher").click()
    await expect(page.locator(".doclist li")).to_have_count(1)
    await page.get_by_label("Patient").fill("zoe")
    await page.get_by_label("Trier par").select_option("patient")
    await page.get_by_role("button", name="Afficher").click()
    await page.wait_for_url(re.compile(r"[?&]sort=patient"))
    await expect(page.locator(".doclist li")).to_have_count(1)
    await shot(page, f"journey-{size}-2-search")

    # Open it (read: the count drops), then mark it unread again.
    await page.get_by_role("link", name="Résultats de laboratoire").click()
    await page.wait_for_url("**/documents/*")
    opened = await page.request.get(page.url + "/files/0")  # as "Ouvrir" does, with the session's cookie
    assert opened.ok
    await page.reload()
    assert (await page.locator(".badge").inner_text()).startswith("1")
    await page.get_by_role("button", name="Marquer comme non lu").click()
    await page.wait_for_url("**/documents?info=unread")
    assert (await page.locator(".badge").inner_text()).startswith("2")
    await shot(page, f"journey-{size}-3-unread-again")

    # Mes patients: searchable, every value labelled on a phone, documents one click away.
    await page.goto(web + "/patients")
    await page.get_by_role("searchbox", name="Patient").fill("martin")
    await page.get_by_role("button", name="Rechercher").click()
    await expect(page.locator("tbody tr")).to_have_count(1)
    if size == "phone":
        assert await page.get_by_text("Naissance :").is_visible()
    await shot(page, f"journey-{size}-4-patients")
    await page.get_by_role("link", name="Martin Zoé").click()  # surname first, as the list is sorted
    await page.wait_for_url("**/documents?**patient=**")
    assert await page.locator(".doclist li").count() == 1

    # The session runs out while the profile is open: saving says so, and the login comes back to the profile.
    await page.goto(web + "/profile")
    assert await page.get_by_text("Titres de spécialiste en médecine").count() == 1
    await page.get_by_label("Filtrer la liste").fill("cardio")
    assert await page.get_by_label("Cardiologie", exact=True).is_visible()
    assert not await page.get_by_label("Neurologie", exact=True).is_visible()
    await shot(page, f"journey-{size}-5-profile-filter")
    with gateway.db.transaction() as session:
        session.execute(update(WebSession).values(last_seen_at=utcnow().replace(year=2000)))
    await page.get_by_role("button", name="Enregistrer").click()
    await page.wait_for_url("**/login?**expired=1**")
    assert await page.get_by_text("Votre session a expiré").count() == 1
    await shot(page, f"journey-{size}-6-expired")
    await log_in(page, web, doctor.login or "", doctor.password, settings)
    await page.wait_for_url("**/profile?welcome=1")
    assert await page.get_by_text("Dernière connexion le").count() == 1
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= width
