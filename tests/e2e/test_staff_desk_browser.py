"""The registration desk in Chromium: a staff member with password + TOTP registers a physician in person."""

from __future__ import annotations

import json
import re

import pyotp
import pytest
from playwright.async_api import Browser, expect
from sqlalchemy import select

from myhug.audit.models import AuditEvent
from myhug.components import Components
from myhug.config.settings import Settings
from myhug.directory.identifiers import make_gln
from myhug.directory.models import Physician
from myhug.staffdesk.service import add_staff
from myhug.supervisor import Running
from tests.e2e.test_webmail_browser import browser, shot  # noqa: F401  (fixture)
from tests.helpers import web_base as base
from tests.webmail_flow import last_sms_code

pytestmark = pytest.mark.once  # the browser's side: run on one backend (tests/conftest.py)


async def test_staff_registers_a_physician_after_checking_identity_and_mobile(
    running: Running, gateway: Components, settings: Settings, browser: Browser  # noqa: F811
) -> None:
    with gateway.db.transaction() as session:
        staff = add_staff(session, gateway.sealer, "agent.cyber", "Agent Cybersanté")
    page = await browser.new_page()
    await page.goto(base(running) + "/staff")
    await page.wait_for_url("**/staff/login")
    await page.get_by_label("Identifiant").fill(staff.login)
    await page.get_by_label("Mot de passe").fill(staff.password)
    await page.get_by_label("Code de l’application d’authentification").fill("000000")
    await page.get_by_role("button", name="Se connecter").click()
    await expect(page.get_by_text("Identifiant, mot de passe ou code incorrect.")).to_have_count(1)
    await page.get_by_label("Identifiant").fill(staff.login)
    await page.get_by_label("Mot de passe").fill(staff.password)
    await page.get_by_label("Code de l’application d’authentification").fill(pyotp.TOTP(staff.totp_secret).now())
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url("**/staff")
    await shot(page, "10-staff-desk")

    gln = make_gln("760100000888")
    await page.get_by_role("link", name="Enregistrer un nouveau médecin (mode SMS)").click()
    await page.get_by_label("GLN").fill(gln)
    await page.get_by_label("Prénom").fill("Élise")
    await page.get_by_label("Nom", exact=True).fill("Favre")
    await page.get_by_label("Pièce d’identité présentée").select_option("id-card")
    await page.get_by_label("J’ai vérifié").check()
    await page.get_by_label("Téléphone mobile").fill("078 111 22 33")
    await page.get_by_label("Pédiatrie", exact=True).check()
    await shot(page, "11-staff-new-physician")
    # A mistyped GLN: the error is in French and the form keeps everything typed, the identity tick too.
    await page.get_by_label("GLN").fill("7601000000018")
    await page.get_by_role("button", name="Envoyer le code de vérification au mobile").click()
    await expect(page.get_by_text("GLN invalide « 7601000000018 » : chiffre de contrôle erroné.")).to_have_count(1)
    assert await page.get_by_label("J’ai vérifié").is_checked()
    assert await page.get_by_label("Pédiatrie", exact=True).is_checked()
    assert await page.get_by_label("Prénom").input_value() == "Élise"
    await page.get_by_label("GLN").fill(gln)
    await page.get_by_role("button", name="Envoyer le code de vérification au mobile").click()
    await page.wait_for_url("**/staff/verify")
    def sent() -> int:
        return sum(line.startswith("+41781112233\t") for line in settings.sms_outbox.read_text().splitlines())

    before = sent()
    await page.get_by_role("button", name="Renvoyer un code").click()
    await page.wait_for_url("**/staff/verify?info=resent")
    assert sent() == before + 1  # a new code went out; the one read back below is that one
    await page.get_by_label("Code reçu par le médecin").fill("000000" if last_sms_code(settings.sms_outbox, "+41781112233") != "000000" else "111111")
    await page.get_by_role("button", name="Vérifier").click()
    await expect(page.get_by_text("Code incorrect")).to_have_count(1)
    await page.get_by_label("Code reçu par le médecin").fill(last_sms_code(settings.sms_outbox, "+41781112233"))
    await page.get_by_role("button", name="Vérifier").click()
    await page.wait_for_selector("text=Médecin enregistré")
    await shot(page, "12-staff-registered")
    login = await page.locator("#issued-login").inner_text()
    temporary = (await page.locator("#issued-password").inner_text()).strip()
    assert login == "favre.e" and len(temporary) >= 12
    assert await page.get_by_role("heading", name="Votre accès à myHUG").count() == 1  # the letter to print

    # Suspend, then reactivate, from the physician's page.
    await page.get_by_role("link", name="Fiche du médecin").click()
    await page.get_by_role("button", name="Suspendre le compte…").click()
    # A confirmation first: nothing is suspended until the desk says yes.
    await expect(page.locator("#status")).to_have_text("enregistré")
    await shot(page, "13-staff-confirm-suspend")
    await page.get_by_role("button", name="Oui, suspendre le compte").click()
    await expect(page.locator("#status")).to_have_text("suspendu")
    await page.get_by_role("button", name="Réactiver le compte").click()
    await expect(page.locator("#status")).to_have_text("enregistré")
    await page.get_by_role("button", name="Réinitialiser le mot de passe").click()
    await expect(page.locator("#issued-password")).to_have_text(re.compile(r"\S{12,}"))

    with gateway.db.transaction() as session:
        physician = session.scalars(select(Physician).where(Physician.gln == gln)).one()
        assert physician.mobile == "+41781112233" and [s.code for s in physician.specialties] == ["1006"]
        events = session.scalars(select(AuditEvent).where(AuditEvent.physician_gln == gln).order_by(AuditEvent.seq)).all()
    assert [e.event for e in events] == ["registered", "suspended", "reactivated", "password-reset"]
    assert all(e.actor == "staff:agent.cyber" for e in events)
    assert json.loads(events[0].detail) == {"channel": "hosted", "mobile_verified": True, "identity_document": "id-card"}


async def test_staff_registers_an_assistant_linked_to_the_physicians_who_asked(
    running: Running, gateway: Components, settings: Settings, browser: Browser  # noqa: F811
) -> None:
    from myhug.directory.models import Delegation
    from tests.conftest import Directory

    doctor = Directory(gateway).hosted(family_name="Aubert")
    with gateway.db.transaction() as session:
        staff = add_staff(session, gateway.sealer, "agent.cyber", "Agent Cybersanté")
    page = await browser.new_page()
    await page.goto(base(running) + "/staff/login")
    await page.get_by_label("Identifiant").fill(staff.login)
    await page.get_by_label("Mot de passe").fill(staff.password)
    await page.get_by_label("Code de l’application d’authentification").fill(pyotp.TOTP(staff.totp_secret).now())
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url("**/staff")
    await page.get_by_role("link", name="Enregistrer un·e assistant·e médical·e").click()
    await page.get_by_label("Prénom").fill("Claire")
    await page.get_by_label("Nom", exact=True).fill("Rochat")
    await page.get_by_label("Pièce d’identité présentée").select_option("id-card")
    await page.get_by_label("J’ai vérifié").check()
    await page.get_by_label("Téléphone mobile").fill("079 765 43 21")
    await page.get_by_label("GLN des médecins").fill("7601000000018")  # a typo: said in French, nothing sent
    await page.get_by_role("button", name="Envoyer le code de vérification au mobile").click()
    await expect(page.get_by_text("chiffre de contrôle erroné")).to_have_count(1)
    await page.get_by_label("J’ai vérifié").check()
    await page.get_by_label("GLN des médecins").fill(doctor.gln)
    await page.get_by_role("button", name="Envoyer le code de vérification au mobile").click()
    await page.wait_for_url("**/staff/verify")
    await page.get_by_label("Code reçu par l’assistant·e").fill(last_sms_code(settings.sms_outbox, "+41797654321"))
    await page.get_by_role("button", name="Vérifier").click()
    await page.wait_for_selector("text=Assistant·e enregistré·e")
    login = await page.locator("#issued-login").inner_text()
    assert login == "rochat.c" and len((await page.locator("#issued-password").inner_text()).strip()) >= 12
    with gateway.db.transaction() as session:
        [link] = session.scalars(select(Delegation)).all()
        assert link.physician_id == doctor.id and link.assistant_id is not None and link.ended_at is None
        linked = session.scalars(select(AuditEvent).where(AuditEvent.event == "delegate-linked")).one()
        assert linked.actor == "staff:agent.cyber" and linked.physician_gln == doctor.gln
