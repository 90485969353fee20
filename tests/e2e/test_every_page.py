"""Every page of the webmail and the staff desk, in Chromium at 1280×800 and 390×844.

On each page: axe-core (vendored, tests/vendor/axe-core) finds no violation,
and at 390 px nothing is wider than the viewport. A screenshot of each is kept
in the test artifacts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Browser, Page
from sqlalchemy import select, update

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.db.base import utcnow
from myhug.directory.delegation import register_assistant
from myhug.directory.models import Physician
from myhug.directory.service import DpiCredentials
from myhug.dpi_client import Attachment
from myhug.mailbox.models import MailboxItem
from myhug.staffdesk.service import add_staff
from myhug.supervisor import Running
from tests.conftest import Directory
from tests.e2e.test_webmail_browser import ARTIFACTS, browser  # noqa: F401  (fixture)
from tests.helpers import PDF
from tests.helpers import web_base as base
from tests.integration.test_webmail import deposit
from tests.webmail_flow import browser_first_password, browser_sms_login, last_sms_code

pytestmark = pytest.mark.once  # the browser's side: run on one backend (tests/conftest.py)

AXE = (Path(__file__).parents[1] / "vendor" / "axe-core" / "axe.min.js").read_text()
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
LONG_NAME = "Rapport_de_consultation_cardiologique_ambulatoire_du_patient_avec_echocardiographie_complete.pdf"


async def audit_page(page: Page, name: str) -> list[str]:
    """Problems of the page at each size: axe violations, and overflow at phone width."""
    problems: list[str] = []
    for size, (width, height) in SIZES.items():
        await page.set_viewport_size({"width": width, "height": height})
        await page.reload()
        if not await page.evaluate("() => typeof axe !== 'undefined'"):
            await page.evaluate(AXE)
        result = await page.evaluate("async () => (await axe.run(document)).violations.map("
                                     "v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))")
        problems += [f"{name} ({size}): {violation}" for violation in result]
        if size == "phone":
            wide = await page.evaluate("() => document.documentElement.scrollWidth")
            if wide > width:
                problems.append(f"{name} (phone): page is {wide}px wide in a {width}px viewport")
            # A menu entry on two lines ("Mon / profil") is an inline box with two client rectangles.
            wrapped = await page.evaluate("() => [...document.querySelectorAll('nav a')]"
                                          ".filter(a => a.getClientRects().length > 1).map(a => a.textContent.trim())")
            problems += [f"{name} (phone): menu entry wraps: {entry}" for entry in wrapped]
        # An address field shows the whole address (it was cut off on the profile page).
        cut = await page.evaluate("() => [...document.querySelectorAll('input[type=email]')]"
                                  ".filter(i => i.value && i.scrollWidth > i.clientWidth).map(i => i.value)")
        problems += [f"{name} ({size}): address cut off in its field: {value}" for value in cut]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"page-{name}-{size}.png"), full_page=True)
    return problems


async def visit(page: Page, url: str, name: str, problems: list[str],
                before: Callable[[], Awaitable[None]] | None = None) -> None:
    await page.goto(url)
    if before:
        await before()
    problems += await audit_page(page, name)


async def test_every_page_is_accessible_and_fits_a_phone(
    running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials, directory: Directory,
    browser: Browser,  # noqa: F811
) -> None:
    doctor = directory.hosted(consents=("P-1001", "P-1002"))
    with gateway.db.transaction() as session:  # a long notification address, as practices have
        session.execute(update(Physician).where(Physician.id == doctor.id).values(
            email="secretariat@cabinet-dupont-favre.ch"))
    await deposit(running, gateway, dpi, doctor, attachments=[Attachment(LONG_NAME, PDF)])
    await deposit(running, gateway, dpi, doctor, document="DOC-2", patient="P-1002", patient_name="Zoé Martin-Lefèvre",
                  patient_birthdate="1948-03-02", document_type="lab-report", subject="Résultats de laboratoire")
    web = base(running)
    settings.web.public_url = web  # passkeys offered: their buttons are on the pages checked
    problems: list[str] = []

    # Physician: the login pages, then every page behind the login.
    context = await browser.new_context(bypass_csp=True)  # axe is injected into the page
    page = await context.new_page()
    await visit(page, web + "/password/forgotten", "password-forgotten", problems)
    await visit(page, web + "/login", "login", problems)
    await page.get_by_label("Identifiant").fill(doctor.login or "")
    await page.get_by_label("Mot de passe").fill(doctor.password)
    await page.get_by_role("button", name="Continuer").click()
    await page.wait_for_url("**/login/sms")
    problems += await audit_page(page, "login-sms")
    await page.get_by_label("Code reçu par SMS").fill(last_sms_code(settings.sms_outbox))
    await page.get_by_label("Faire confiance à cet appareil pendant 30 jours").check()  # "Connexion et sécurité" lists it
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url("**/documents**")
    for path, name in [("/aide", "help"), ("/documents", "documents"), ("/documents?show=unread", "documents-unread"),
                       ("/patients", "patients"), ("/profile", "profile"), ("/profile/acces", "access"),
                       ("/profile/delegation", "delegation"), ("/remplacements", "stand-ins"),
                       ("/password", "password"),
                       ("/documents/999999", "not-found"), ("/documents?q=martin&sort=patient", "documents-search")]:
        await visit(page, web + path, name, problems)
    await page.goto(web + "/documents")
    await page.get_by_role("link", name="Lettre de sortie de Jean Exemple").click()
    await page.wait_for_url("**/documents/*")
    problems += await audit_page(page, "document")  # with its PDF preview
    await visit(page, web + "/documents?select=all", "documents-all-selected", problems)
    with gateway.db.transaction() as session:  # the DPI withdrew the second one: its line and its page say so
        item = session.scalars(select(MailboxItem).order_by(MailboxItem.id.desc())).first()
        assert item is not None
        item.state, item.retracted_at, withdrawn = "retracted", utcnow(), item.id
    await visit(page, web + "/documents", "documents-with-withdrawn", problems)
    await visit(page, web + f"/documents/{withdrawn}", "document-withdrawn", problems)
    await page.get_by_role("button", name="Se déconnecter").click()
    await page.wait_for_load_state()
    problems += await audit_page(page, "logout")
    await context.close()

    # An assistant reading for two physicians: the first password, the list with its switch and banner.
    colleague = directory.hosted(family_name="Favre", mobile="+41791234568")
    with gateway.db.transaction() as session:
        made = register_assistant(session, given_name="Claire", family_name="Rochat", mobile="+41797654321",
                                  physician_glns=[doctor.gln, colleague.gln], actor="test")
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    await browser_sms_login(page, web, settings.sms_outbox, made.assistant.login, made.temporary_password,
                            "+41797654321", landing="**/password")
    problems += await audit_page(page, "assistant-password")
    await browser_first_password(page, made.temporary_password, "assistante du cabinet 2026")
    await page.wait_for_url("**/documents**")
    problems += await audit_page(page, "assistant-documents")
    await context.close()

    # Staff desk: login, home, the registration form, a physician's page.
    with gateway.db.transaction() as session:
        staff = add_staff(session, gateway.sealer, "agent.cyber", "Agent Cybersanté")
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    await visit(page, web + "/staff/login", "staff-login", problems)
    await page.get_by_label("Identifiant").fill(staff.login)
    await page.get_by_label("Mot de passe").fill(staff.password)
    await page.get_by_label("Code de l’application d’authentification").fill(pyotp.TOTP(staff.totp_secret).now())
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url("**/staff")
    for path, name in [("/staff", "staff-home"), ("/staff/physicians/new", "staff-new"),
                       ("/staff/assistants/new", "staff-new-assistant"),
                       (f"/staff/physicians/{doctor.gln}", "staff-physician"),
                       (f"/staff/physicians/{doctor.gln}/letter", "staff-letter")]:
        await visit(page, web + path, name, problems)
    await page.goto(web + f"/staff/physicians/{doctor.gln}")
    await page.get_by_role("button", name="Suspendre le compte…").click()
    problems += await audit_page(page, "staff-confirm-suspend")
    await page.goto(web + "/staff/physicians/new")
    await page.get_by_label("GLN").fill("7601000000026")
    await page.get_by_label("Nom", exact=True).fill("Favre")
    await page.get_by_label("Pièce d’identité présentée").select_option("id-card")
    await page.get_by_label("J’ai vérifié").check()
    await page.get_by_label("Téléphone mobile").fill("078 111 22 33")
    await page.get_by_role("button", name="Envoyer le code de vérification au mobile").click()
    await page.wait_for_url("**/staff/verify")
    problems += await audit_page(page, "staff-verify")
    # The checker bites: an image without a text alternative is reported.
    await page.evaluate("() => document.querySelector('main').append(document.createElement('img'))")
    assert "image-alt" in await page.evaluate("async () => (await axe.run(document)).violations.map(v => v.id)")
    await context.close()

    assert problems == []
