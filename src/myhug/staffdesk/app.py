"""The registration desk of the cybersanté service: staff log in with password + TOTP, register
physicians after checking their identity and their mobile, reset phones and passwords, suspend."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from myhug.blobs.store import Sealer
from myhug.config.settings import Settings
from myhug.db.base import utcnow
from myhug.db.session import Database
from myhug.directory import admin
from myhug.directory.delegation import register_assistant
from myhug.directory.identifiers import (
    InvalidIdentifier,
    normalize_address,
    normalize_mobile,
    validate_gln,
)
from myhug.directory.models import Physician
from myhug.directory.profile import ProfileError, update_profile
from myhug.directory.service import (
    DirectoryError,
    find_by_gln,
    find_physicians,
    register_physician,
)
from myhug.directory.specialties import specialty_groups
from myhug.staffdesk import service
from myhug.staffdesk.models import StaffMember
from myhug.websecurity.forms import (
    LoginRefused,
    Redirect,
    checked_form,
    clear_cookie,
    client_ip,
    set_cookie,
)
from myhug.websecurity.models import WebSession
from myhug.websecurity.pages import Pages
from myhug.websecurity.sessions import (
    AUTHENTICATED,
    STAFF,
    create_session,
    destroy_session,
    find_session,
)
from myhug.websecurity.sms import SmsError, SmsProvider

log = logging.getLogger(__name__)
T = TypeVar("T")
HERE = Path(__file__).parent
PRE_COOKIE = "__Host-myhug-staff-pre"
IDENTITY_DOCUMENTS = {"passport": "Passeport", "id-card": "Carte d’identité", "residence-permit": "Permis de séjour"}


class StaffDesk:
    def __init__(self, db: Database, sealer: Sealer, settings: Settings, sms: SmsProvider) -> None:
        self.db = db
        self.sealer = sealer
        self.settings = settings
        self.sms = sms
        self.pages = Pages(HERE / "templates")

    def routes(self) -> list[Route]:
        return [
            Route("/staff/login", self.login, methods=["GET", "POST"]),
            Route("/staff", self.home),
            Route("/staff/physicians/new", self.new_physician, methods=["GET", "POST"]),
            Route("/staff/assistants/new", self.new_assistant, methods=["GET", "POST"]),
            Route("/staff/verify", self.verify, methods=["GET", "POST"]),
            Route("/staff/verify/resend", self.verify_resend, methods=["POST"]),
            Route("/staff/verify/cancel", self.verify_cancel, methods=["POST"]),
            Route("/staff/unlock", self.unlock_staff, methods=["POST"]),
            Route("/staff/physicians/{gln}/letter", self.letter),
            Route("/staff/physicians/{gln}", self.physician),
            Route("/staff/physicians/{gln}/{action}", self.physician_action, methods=["POST"]),
            Route("/staff/logout", self.logout, methods=["POST"]),
        ]

    # --- plumbing ------------------------------------------------------------------

    def _cookie(self, response: Response, token: str) -> Response:
        set_cookie(response, service.STAFF_POLICY.cookie, token)
        return response

    def committed(self, work: Callable[[Session], T]) -> T:
        return self.db.run_keeping_refusal(work, (LoginRefused, DirectoryError, InvalidIdentifier))

    async def current(self, request: Request) -> tuple[WebSession, StaffMember]:
        def load() -> tuple[WebSession, StaffMember] | None:
            with self.db.transaction() as session:
                loaded = service.load_staff_session(session, request.cookies.get(service.STAFF_POLICY.cookie))
                if loaded is not None:
                    session.expunge_all()
                return loaded

        loaded = await run_in_threadpool(load)
        if loaded is None:
            raise Redirect("/staff/login")
        return loaded

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        return self.pages.render(request, template, status, **context)

    # --- login -----------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        import secrets

        csrf = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
        if request.method == "GET":
            response = self.page(request, "staff_login.html", csrf=csrf, error=None)
            set_cookie(response, PRE_COOKIE, csrf)
            return response
        form = await checked_form(request, request.cookies.get(PRE_COOKIE))
        ip = client_ip(request)

        def step(session: Session) -> str:
            staff = service.staff_login(session, self.sealer, str(form.get("login", "")), str(form.get("password", "")),
                                        str(form.get("code", "")), ip)
            return create_session(session, service.STAFF_POLICY, role=STAFF, subject_id=staff.id,
                                  stage=AUTHENTICATED, via="totp")

        try:
            token = await run_in_threadpool(self.committed, step)
        except LoginRefused as exc:
            return self.page(request, "staff_login.html", 401, csrf=csrf, error=str(exc))
        return self._cookie(RedirectResponse("/staff", 303), token)

    async def logout(self, request: Request) -> Response:
        staff_session, _ = await self.current(request)
        await checked_form(request, staff_session.csrf_token)

        def step() -> None:
            with self.db.transaction() as session:
                destroy_session(session, request.cookies.get(service.STAFF_POLICY.cookie))

        await run_in_threadpool(step)
        response = RedirectResponse("/staff/login", 303)
        clear_cookie(response, service.STAFF_POLICY.cookie)
        return response

    # --- pages -----------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        staff_session, staff = await self.current(request)
        query = request.query_params.get("q", "").strip()[:100]

        def search() -> tuple[list[Physician], list[Physician]]:
            with self.db.reading() as session:
                rows = find_physicians(session, query, limit=50) if query else []
                waiting = admin.pending_activations(session)
                session.expunge_all()
                return rows, waiting

        results, waiting = await run_in_threadpool(search)
        return self.page(request, "staff_home.html", staff=staff, csrf=staff_session.csrf_token, query=query,
                         results=results, waiting=waiting, now=utcnow(), info=request.query_params.get("info"),
                         error=request.query_params.get("error"))

    async def new_physician(self, request: Request) -> Response:
        staff_session, staff = await self.current(request)
        context: dict[str, Any] = dict(staff=staff, csrf=staff_session.csrf_token, specialty_groups=specialty_groups(),
                       documents=IDENTITY_DOCUMENTS, values={}, error=None)
        if request.method == "GET":
            return self.page(request, "staff_new.html", **context)
        form = await checked_form(request, staff_session.csrf_token)
        values = {k: str(form.get(k, "")).strip() for k in ("gln", "given_name", "family_name", "mobile", "email",
                                                             "identity_document")}
        values["specialties"] = form.getlist("specialties")  # type: ignore[assignment]
        values["identity_checked"] = "yes" if form.get("identity_checked") == "yes" else ""
        context["values"] = values
        try:
            if form.get("identity_checked") != "yes" or values["identity_document"] not in IDENTITY_DOCUMENTS:
                raise DirectoryError("Vérifiez la pièce d’identité du médecin et indiquez son type.")
            gln = validate_gln(values["gln"])
            mobile = normalize_mobile(values["mobile"])
            if not values["family_name"]:
                raise DirectoryError("Le nom de famille est obligatoire.")
            if values["email"]:
                values["email"] = normalize_address(values["email"])

            def step(session: Session) -> str:
                if find_by_gln(session, gln) is not None:
                    raise DirectoryError(f"Un médecin avec le GLN {gln} est déjà enregistré.")
                row = find_session(session, request.cookies.get(service.STAFF_POLICY.cookie))
                assert row is not None
                return service.start_verification(row, "register", {**values, "gln": gln, "mobile": mobile})

            code = await run_in_threadpool(self.committed, step)
        except (DirectoryError, InvalidIdentifier) as exc:
            context["error"] = exc.in_french
            return self.page(request, "staff_new.html", 400, **context)
        return await self._send_code(request, mobile, code)

    async def new_assistant(self, request: Request) -> Response:
        """A practice assistant's account, at the physicians' request: identity checked, mobile checked by SMS."""
        staff_session, staff = await self.current(request)
        context: dict[str, Any] = dict(staff=staff, csrf=staff_session.csrf_token, documents=IDENTITY_DOCUMENTS,
                                       values={}, error=None)
        if request.method == "GET":
            return self.page(request, "staff_new_assistant.html", **context)
        form = await checked_form(request, staff_session.csrf_token)
        values = {k: str(form.get(k, "")).strip() for k in ("given_name", "family_name", "mobile", "email",
                                                             "physicians", "identity_document")}
        context["values"] = values
        try:
            if form.get("identity_checked") != "yes" or values["identity_document"] not in IDENTITY_DOCUMENTS:
                raise DirectoryError("Vérifiez la pièce d’identité de l’assistant·e et indiquez son type.")
            if not values["family_name"]:
                raise DirectoryError("Le nom de famille est obligatoire.")
            mobile = normalize_mobile(values["mobile"])
            glns = [validate_gln(g) for g in values["physicians"].replace(",", " ").split()]
            if not glns:
                raise DirectoryError("Indiquez le GLN d’au moins un médecin qui demande ce lien.")
            if values["email"]:
                values["email"] = normalize_address(values["email"])

            def step(session: Session) -> str:
                for gln in glns:
                    if find_by_gln(session, gln) is None:
                        raise DirectoryError(f"Aucun médecin avec le GLN {gln}.")
                row = find_session(session, request.cookies.get(service.STAFF_POLICY.cookie))
                assert row is not None
                return service.start_verification(row, "register-assistant",
                                                  {**values, "mobile": mobile, "physicians": glns})

            code = await run_in_threadpool(self.committed, step)
        except (DirectoryError, InvalidIdentifier) as exc:
            context["error"] = exc.in_french
            return self.page(request, "staff_new_assistant.html", 400, **context)
        return await self._send_code(request, mobile, code)

    async def _send_code(self, request: Request, mobile: str, code: str, resent: bool = False) -> Response:
        try:
            await self.sms.send(mobile, f"myHUG : code de vérification de votre mobile : {code}. "
                                            "Donnez-le à la personne qui vous enregistre.")
        except SmsError:
            return self.page(request, "error.html", 503, title="SMS", message="L’envoi du SMS a échoué. Réessayez.",
                             back_url="/staff/verify", back_label="Retour à la vérification")
        return RedirectResponse("/staff/verify" + ("?info=resent" if resent else ""), 303)

    async def verify(self, request: Request) -> Response:
        staff_session, staff = await self.current(request)
        if request.method == "GET":
            return self.page(request, "staff_verify.html", staff=staff, csrf=staff_session.csrf_token,
                             pending=staff_session.pending, error=None)
        form = await checked_form(request, staff_session.csrf_token)
        actor = f"staff:{staff.login}"

        def step(session: Session) -> tuple[str, str, str | None, str | None]:
            row = find_session(session, request.cookies.get(service.STAFF_POLICY.cookie))
            assert row is not None
            try:
                kind, data = service.check_verification(row, str(form.get("code", "")))
            except LoginRefused:
                session.flush()
                raise
            if kind == "register-assistant":
                made = register_assistant(session, given_name=data["given_name"], family_name=data["family_name"],
                                          mobile=data["mobile"], email=data["email"] or None,
                                          physician_glns=data["physicians"], actor=actor)
                return kind, made.assistant.display_name, made.assistant.login, made.temporary_password
            if kind == "register":
                registration = register_physician(
                    session, gln=data["gln"], given_name=data["given_name"], family_name=data["family_name"],
                    mobile=data["mobile"], email=data["email"] or None, specialties=data["specialties"], actor=actor,
                    audit_detail={"mobile_verified": True, "identity_document": data["identity_document"]},
                )
                p = registration.physician
                return kind, p.gln, p.login, registration.temporary_password
            result = admin.set_mobile(session, find_by_gln(session, data["gln"]), data["mobile"], actor)  # type: ignore[arg-type]
            return kind, result.physician.gln, None, None

        try:
            kind, gln, login, temporary = await run_in_threadpool(self.committed, step)
        except (LoginRefused, DirectoryError) as exc:
            return self.page(request, "staff_verify.html", 400, staff=staff, csrf=staff_session.csrf_token,
                             pending=True, error=exc.in_french)
        if kind == "register-assistant":  # here `gln` holds the assistant's name: an assistant has no GLN
            return self.page(request, "staff_assistant_done.html", staff=staff, csrf=staff_session.csrf_token,
                             name=gln, login=login, temporary_password=temporary,
                             webmail_url=self.settings.web.public_url or "/login")
        if kind == "register":
            # Shown once, on this page only (with the printable letter); the physician changes it at the first login.
            found = await run_in_threadpool(self._physician, gln)
            assert found is not None
            return self.page(request, "staff_done.html", staff=staff, csrf=staff_session.csrf_token, gln=gln,
                             login=login, temporary_password=temporary, p=found[0],
                             webmail_url=self.settings.web.public_url or "/login")
        return RedirectResponse(f"/staff/physicians/{gln}?done=mobile", 303)

    async def verify_resend(self, request: Request) -> Response:
        staff_session, staff = await self.current(request)
        await checked_form(request, staff_session.csrf_token)

        def step(session: Session) -> tuple[str, str]:
            row = find_session(session, request.cookies.get(service.STAFF_POLICY.cookie))
            assert row is not None
            return service.resend_verification(row)

        try:
            mobile, code = await run_in_threadpool(self.committed, step)
        except LoginRefused as exc:
            return self.page(request, "staff_verify.html", 400, staff=staff, csrf=staff_session.csrf_token,
                             pending=False, error=str(exc))
        return await self._send_code(request, mobile, code, resent=True)

    async def verify_cancel(self, request: Request) -> Response:
        staff_session, _ = await self.current(request)
        await checked_form(request, staff_session.csrf_token)

        def step(session: Session) -> None:
            row = find_session(session, request.cookies.get(service.STAFF_POLICY.cookie))
            assert row is not None
            service.cancel_verification(row)

        await run_in_threadpool(self.committed, step)
        return RedirectResponse("/staff?info=cancelled", 303)

    async def unlock_staff(self, request: Request) -> Response:
        staff_session, staff = await self.current(request)
        form = await checked_form(request, staff_session.csrf_token)
        login = str(form.get("login", "")).strip()

        def step(session: Session) -> bool:
            return service.unlock_staff(session, login, actor=f"staff:{staff.login}")

        try:
            locked = await run_in_threadpool(self.committed, step)
        except DirectoryError:
            return RedirectResponse("/staff?" + urlencode({"error": f"Aucun membre du guichet « {login} »."}), 303)
        return RedirectResponse("/staff?info=" + ("staff-unlocked" if locked else "staff-not-locked"), 303)

    async def letter(self, request: Request) -> Response:
        """The access letter handed to the physician, printable; without the password (shown once, elsewhere)."""
        staff_session, staff = await self.current(request)
        found = await run_in_threadpool(self._physician, request.path_params["gln"])
        if found is None:
            return self._not_found(request, request.path_params["gln"])
        physician, _ = found
        return self.page(request, "staff_letter.html", staff=staff, csrf=staff_session.csrf_token, p=physician,
                         temporary_password=None, webmail_url=self.settings.web.public_url or "/login")

    def _physician(self, gln: str) -> tuple[Physician, bool] | None:
        with self.db.transaction() as session:
            p = find_by_gln(session, gln)
            if p is None:
                return None
            _ = p.specialties
            locked = admin.is_physician_locked(session, p)
            session.expunge_all()
            return p, locked

    def _not_found(self, request: Request, gln: str) -> Response:
        return self.page(request, "error.html", 404, title="Introuvable", message=f"Aucun médecin avec le GLN {gln}.")

    async def physician(self, request: Request) -> Response:
        staff_session, staff = await self.current(request)
        gln = request.path_params["gln"]

        found = await run_in_threadpool(self._physician, gln)
        if found is None:
            return self._not_found(request, gln)
        physician, locked = found
        return self._physician_page(request, staff, staff_session, physician, locked,
                                    done=request.query_params.get("done"))

    def _physician_page(self, request: Request, staff: StaffMember, staff_session: WebSession, physician: Physician,
                        locked: bool, status: int = 200, **context: Any) -> Response:
        context.setdefault("done", None)
        context.setdefault("temporary_password", None)
        context.setdefault("error", None)
        context.setdefault("confirm", None)
        return self.page(request, "staff_physician.html", status, staff=staff, csrf=staff_session.csrf_token,
                         p=physician, locked=locked, specialty_groups=specialty_groups(),
                         selected={s.code for s in physician.specialties},
                         webmail_url=self.settings.web.public_url or "/login", **context)

    async def physician_action(self, request: Request) -> Response:
        staff_session, staff = await self.current(request)
        form = await checked_form(request, staff_session.csrf_token)
        gln, action = request.path_params["gln"], request.path_params["action"]
        actor = f"staff:{staff.login}"
        if action == "mobile":
            try:
                mobile = normalize_mobile(str(form.get("mobile", "")))
            except InvalidIdentifier as exc:
                return self.page(request, "error.html", 400, title="Mobile", message=exc.in_french, staff=staff,
                                 csrf=staff_session.csrf_token, back_url=f"/staff/physicians/{gln}",
                                 back_label="Retour à la fiche du médecin")

            def pending(session: Session) -> str:
                if find_by_gln(session, gln) is None:
                    raise DirectoryError(f"Aucun médecin avec le GLN {gln}.")
                row = find_session(session, request.cookies.get(service.STAFF_POLICY.cookie))
                assert row is not None
                return service.start_verification(row, "set-mobile", {"gln": gln, "mobile": mobile})

            try:
                code = await run_in_threadpool(self.committed, pending)
            except DirectoryError as exc:
                return self.page(request, "error.html", 404, title="Introuvable", message=str(exc))
            return await self._send_code(request, mobile, code)
        if action not in ("suspend", "reactivate", "reset-password", "remove-passkeys", "unlock", "contact"):
            return self.page(request, "error.html", 404, title="Introuvable", message="Action inconnue.")
        if action == "suspend" and form.get("confirm") != "yes":
            # Suspending ends the physician's access at once: the desk confirms it on a page of its own.
            found = await run_in_threadpool(self._physician, gln)
            if found is None:
                return self._not_found(request, gln)
            return self._physician_page(request, staff, staff_session, *found, confirm="suspend")
        contact = {"email": str(form.get("email", "")), "specialties": form.getlist("specialties")}

        def step(session: Session) -> tuple[admin.AdminResult, bool]:
            if action == "unlock":
                physician = admin.require_physician(session, gln)
                admin.unlock_physician(session, physician, actor)
                result = admin.AdminResult(physician, "unlocked")
            elif action == "contact":
                physician = admin.require_physician(session, gln)
                update_profile(session, physician, contact, actor)
                result = admin.AdminResult(physician, "contact")
            else:
                result = admin.apply(session, action, gln, actor=actor)
            _ = result.physician.specialties
            locked = admin.is_physician_locked(session, result.physician)
            session.flush()
            session.expunge_all()
            return result, locked

        try:
            result, locked = await run_in_threadpool(self.committed, step)
        except ProfileError as exc:
            found = await run_in_threadpool(self._physician, gln)
            if found is None:
                return self._not_found(request, gln)
            return self._physician_page(request, staff, staff_session, *found, status=400, error=str(exc))
        except (DirectoryError, InvalidIdentifier) as exc:
            return self.page(request, "error.html", 400, title="Action impossible", message=exc.in_french, staff=staff,
                             csrf=staff_session.csrf_token, back_url=f"/staff/physicians/{gln}",
                             back_label="Retour à la fiche du médecin")
        return self._physician_page(request, staff, staff_session, result.physician, locked, done=action,
                                    temporary_password=result.temporary_password)
