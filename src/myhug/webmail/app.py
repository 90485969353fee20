"""The physicians' webmail (Starlette + Jinja2): server-rendered, French, works without JavaScript."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from myhug.audit.trail import record
from myhug.blobs.store import Sealer
from myhug.config.settings import Settings
from myhug.crypto.passwords import hash_password, verify_password
from myhug.db.base import utcnow
from myhug.db.session import Database
from myhug.directory.identifiers import InvalidIdentifier
from myhug.directory.models import Physician
from myhug.directory.password_policy import WeakPassword, check_password
from myhug.directory.profile import (
    DOCUMENT_SHOWS,
    DOCUMENT_TYPES,
    LANDING_PAGES,
    PATIENT_SHOWS,
    Preferences,
    ProfileError,
    update_profile,
)
from myhug.directory.service import (
    AccountSuspended,
    DirectoryError,
    HinIdentityMismatch,
    HinLinkRequired,
    activate_hin_identity,
    activate_with_password,
    link_hin_identity,
)
from myhug.directory.specialties import specialty_groups
from myhug.mailbox.notify import skip_waiting
from myhug.mailbox.reading import (
    PAGE_SIZE,
    SORTS,
    DocumentFilter,
    DocumentUnavailable,
    document_detail,
    list_documents,
    list_patients,
    mark_unread,
    open_attachment,
    unread_count,
)
from myhug.webmail import auth
from myhug.webmail.identity import GroupAccountRefused, IdentityRefused, identity_provider
from myhug.websecurity.forms import (
    PRE_COOKIE,
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
    PASSWORD_CHANGE,
    PHYSICIAN,
    SMS_PENDING,
    SessionPolicy,
    create_session,
    destroy_all_for,
    destroy_session,
    load_session,
)
from myhug.websecurity.sms import SmsError, SmsProvider

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE_NAME = "__Host-myhug"
HIN_LINK_FIRST = ("Un compte myHUG existe déjà pour votre GLN, avec un accès par mot de passe et code SMS. Pour y "
                  "lier votre identité HIN, connectez-vous une fois avec votre mot de passe et le code SMS, puis "
                  "revenez à cette adresse ; ou adressez-vous au service de cybersanté des HUG.")
T = TypeVar("T")


class Webmail:
    """Route handlers, wired explicitly to the parts they use."""

    def __init__(self, db: Database, sealer: Sealer, settings: Settings, sms: SmsProvider) -> None:
        self.db = db
        self.sealer = sealer
        self.settings = settings
        self.sms = sms
        self.identity = identity_provider(settings.hin)
        self.policy = SessionPolicy(
            cookie=COOKIE_NAME,
            idle=timedelta(minutes=self.settings.web.session_idle_minutes),
            absolute=timedelta(hours=self.settings.web.session_absolute_hours),
        )
        self.pages = Pages(HERE / "templates", DOCUMENT_TYPES=DOCUMENT_TYPES)

    # --- plumbing ---------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/login/sms", self.login_sms, methods=["GET", "POST"]),
            Route("/login/sms/resend", self.login_sms_resend, methods=["POST"]),
            Route("/hin/login", self.hin_login),
            Route("/hin/link", self.hin_link, methods=["POST"]),
            Route("/password", self.password, methods=["GET", "POST"]),
            Route("/password/forgotten", self.password_forgotten),
            Route("/documents", self.documents),
            Route("/documents/{item_id:int}", self.document),
            Route("/documents/{item_id:int}/unread", self.document_unread, methods=["POST"]),
            Route("/documents/{item_id:int}/files/{position:int}", self.document_file),
            Route("/patients", self.patients),
            Route("/profile", self.profile, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["GET", "POST"]),
        ]

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        visit = getattr(request.state, "visit", None)
        if visit is not None and context.get("physician") is not None:
            # The layout's unread count and the note saying when the idle session closes.
            context.setdefault("unread_count", visit.unread)
            context.setdefault("previous_login", visit.previous_login)
            context.setdefault("idle_seconds", int(self.policy.idle.total_seconds()))
            context.setdefault("idle_until", utcnow() + self.policy.idle)
        return self.pages.render(request, template, status_code, **context)

    def redirect(self, url: str, token: str | None = None, clear: bool = False) -> Response:
        response = RedirectResponse(url, status_code=303)
        if token is not None:
            set_cookie(response, COOKIE_NAME, token, max_age=int(self.policy.absolute.total_seconds()))
        if clear:
            clear_cookie(response, COOKIE_NAME)
        return response

    def _load(self, token: str | None, welcome: bool = False) -> Visit | None:
        with self.db.transaction() as session:
            web_session = load_session(session, self.policy, token, PHYSICIAN)
            if web_session is None:
                return None
            physician = session.get(Physician, web_session.physician_id or 0)
            if physician is None or physician.status == "suspended":
                destroy_session(session, token)
                return None
            unread = unread_count(session, physician.id) if web_session.stage == AUTHENTICATED else 0
            previous = auth.previous_login(session, physician.gln) if welcome else None
            session.expunge(physician)
            session.expunge(web_session)
            return Visit(web_session, physician, unread, previous)

    async def current(self, request: Request, stage: str = AUTHENTICATED) -> tuple[WebSession, Physician]:
        """The session at `stage`; otherwise redirect to where the physician stands in the login.

        Without a live session, the login page says whether one expired, and brings the
        physician back to this page afterwards (a POST's data cannot be kept: its page is).
        """
        token = request.cookies.get(COOKIE_NAME)
        visit = await run_in_threadpool(self._load, token, "welcome" in request.query_params)
        if visit is None:
            params = {"next": _local_target(request)}
            if token:
                params["expired"] = "1"
            raise Redirect("/login?" + urlencode(params))
        if visit.web_session.stage != stage:
            raise Redirect({SMS_PENDING: "/login/sms", PASSWORD_CHANGE: "/password"}.get(visit.web_session.stage,
                                                                                         "/documents"))
        request.state.visit = visit
        return visit.web_session, visit.physician

    def landing_url(self, physician: Physician) -> str:
        return "/" + Preferences.of(physician).landing

    # --- login ------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        visit = await run_in_threadpool(self._load, request.cookies.get(COOKIE_NAME))
        if visit is not None and visit.web_session.stage == AUTHENTICATED:
            return self.redirect(self.landing_url(visit.physician))
        if visit is None and self._hin_identity_present(request):
            return self.redirect("/hin/login")  # through the HIN access gateway: no password, no SMS code
        return self.redirect("/login")

    def _hin_identity_present(self, request: Request) -> bool:
        try:
            self.identity.identify(request)
        except IdentityRefused:
            return False
        return True

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self._login_form(request)
        form = await checked_form(request, request.cookies.get(PRE_COOKIE))
        login, password = str(form.get("login", "")), str(form.get("password", ""))
        next_url = _safe_next(str(form.get("next", "")))
        ip = client_ip(request)

        def step(session: Session) -> tuple[str, auth.SmsChallenge]:
            challenge = auth.check_password_and_challenge(session, login, password, ip,
                                                          self.settings.sms.max_codes_per_hour)
            token = create_session(session, self.policy, role=PHYSICIAN, subject_id=challenge.physician_id, stage=SMS_PENDING,
                                   via="sms", challenge_id=challenge.challenge_id)
            return token, challenge

        try:
            token, challenge = await run_in_threadpool(self.committed, step)
        except LoginRefused as exc:
            return self._login_form(request, error=str(exc), status_code=401, login=login)
        try:
            await self.sms.send(challenge.mobile, auth.sms_text(challenge.code))
        except SmsError:
            log.exception("SMS provider failed")
            return self._login_form(request, error="L’envoi du code SMS a échoué. Réessayez dans un instant.",
                                    status_code=503, login=login)
        return self.redirect("/login/sms" + (f"?{urlencode({'next': next_url})}" if next_url else ""), token)

    def committed(self, work: Callable[[Session], T]) -> T:
        return self.db.run_keeping_refusal(work, (LoginRefused, DocumentUnavailable))

    def _login_form(self, request: Request, error: str | None = None, status_code: int = 200,
                    login: str = "") -> Response:
        csrf = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
        q = request.query_params
        response = self.render(request, "login.html", status_code, csrf=csrf, error=error, login=login,
                               next_url=_safe_next(q.get("next", "")), expired=q.get("expired") == "1",
                               hin_present=self._hin_identity_present(request),
                               code_minutes=auth.CODE_TTL_MINUTES)
        set_cookie(response, PRE_COOKIE, csrf)
        return response

    async def login_sms(self, request: Request) -> Response:
        web_session, physician = await self.current(request, SMS_PENDING)
        if request.method == "GET":
            return self._sms_form(request, web_session, physician)
        form = await checked_form(request, web_session.csrf_token)
        code, ip, old_token = str(form.get("code", "")), client_ip(request), request.cookies.get(COOKIE_NAME)
        next_url = _safe_next(str(form.get("next", "")))

        def step(session: Session) -> tuple[str, str]:
            who = auth.verify_code(session, web_session.challenge_id or "", code, ip)
            destroy_session(session, old_token)  # a new session id at login
            stage = PASSWORD_CHANGE if who.password_must_change else AUTHENTICATED
            token = create_session(session, self.policy, role=PHYSICIAN, subject_id=who.id, stage=stage, via="sms")
            record(session, "login", actor=f"web:{ip}", physician_gln=who.gln, detail={"via": "sms"})
            if stage == PASSWORD_CHANGE:
                return token, "/password"
            return token, _welcome(next_url or self.landing_url(who))

        try:
            token, target = await run_in_threadpool(self.committed, step)
        except LoginRefused as exc:
            if str(exc) == auth.CODE_EXPIRED:
                await run_in_threadpool(self._drop, old_token)
                return self._login_form(request, error=str(exc), status_code=401)
            return self._sms_form(request, web_session, physician, 401, error=str(exc), next_url=next_url)
        return self.redirect(target, token)

    def _sms_form(self, request: Request, web_session: WebSession, physician: Physician, status_code: int = 200,
                  error: str | None = None, info: str | None = None, next_url: str | None = None) -> Response:
        return self.render(request, "login_sms.html", status_code, csrf=web_session.csrf_token, error=error, info=info,
                           mobile_hint=_mask_mobile(physician.mobile), code_minutes=auth.CODE_TTL_MINUTES,
                           next_url=next_url if next_url is not None else _safe_next(
                               request.query_params.get("next", "")))

    async def login_sms_resend(self, request: Request) -> Response:
        web_session, physician = await self.current(request, SMS_PENDING)
        await checked_form(request, web_session.csrf_token)

        def step(session: Session) -> tuple[str, str]:
            return auth.new_code_for_resend(session, web_session.challenge_id or "", client_ip(request),
                                            self.settings.sms.max_codes_per_hour)

        try:
            mobile, code = await run_in_threadpool(self.committed, step)
            await self.sms.send(mobile, auth.sms_text(code))
            message, status = "Un nouveau code vous a été envoyé.", 200
        except LoginRefused as exc:
            message, status = str(exc), 429
        except SmsError:
            message, status = "L’envoi du code SMS a échoué. Réessayez dans un instant.", 503
        return self._sms_form(request, web_session, physician, status, info=message)

    def _drop(self, token: str | None) -> None:
        with self.db.transaction() as session:
            destroy_session(session, token)

    def _hin_refused(self, request: Request, message: str) -> Response:
        return self.render(request, "error.html", 403, title="Accès refusé", message=message, support=True,
                           back_url="/login", back_label="Se connecter avec identifiant, mot de passe et code SMS")

    async def hin_login(self, request: Request) -> Response:
        try:
            identity = self.identity.identify(request)
        except GroupAccountRefused as exc:
            log.warning("HIN login refused: %s", exc)
            return self._hin_refused(request, "Les comptes de cabinet (HIN « Group ») ne sont pas acceptés ; "
                                              "connectez-vous avec votre identité HIN personnelle.")
        except IdentityRefused as exc:
            log.warning("HIN login refused: %s", exc)
            return self._hin_refused(request, "Votre identité HIN n’a pas pu être vérifiée. Le client HIN doit être "
                                              "actif et vous devez passer par http://myhug.hin.ch.")
        old_token = request.cookies.get(COOKIE_NAME)
        ip = client_ip(request)

        def step() -> tuple[str, str]:
            with self.db.transaction() as session:
                # As an SMS login is: the physician by GLN, from the address the gateway saw (BALP Login).
                physician = activate_hin_identity(session, identity, actor=f"web:{ip}")
                destroy_session(session, old_token)
                token = create_session(session, self.policy, role=PHYSICIAN, subject_id=physician.id, stage=AUTHENTICATED, via="hin")
                record(session, "login", actor=f"web:{ip}", physician_gln=physician.gln,
                       detail={"via": "hin", "hin_login": identity.login_name})
                return token, _welcome(self.landing_url(physician), hin=True)

        try:
            token, target = await run_in_threadpool(step)
        except HinLinkRequired:
            loaded = await run_in_threadpool(self._load, old_token)
            if loaded is not None and loaded.web_session.stage == AUTHENTICATED and loaded.web_session.via == "sms" \
                    and loaded.physician.gln == identity.gln:
                # The physician proved the account with password and SMS code: offer the link, never do it silently.
                request.state.visit = loaded
                return self.render(request, "hin_link.html", csrf=loaded.web_session.csrf_token,
                                   physician=loaded.physician,
                                   hin_mail=identity.mail)
            log.warning("HIN login refused: GLN registered in SMS mode, not linked")
            return self._hin_refused(request, HIN_LINK_FIRST)
        except HinIdentityMismatch:
            log.warning("HIN login refused: HIN address differs from the registered one")
            return self._hin_refused(request, "Votre identité HIN ne correspond pas à l’adresse HIN enregistrée pour "
                                              "votre GLN. Contactez le service de cybersanté des HUG.")
        except AccountSuspended:
            log.warning("HIN login refused: account suspended")
            return self._hin_refused(request, "Votre compte myHUG est suspendu. Le service de cybersanté des HUG "
                                              "peut le réactiver après vérification.")
        except InvalidIdentifier as exc:
            log.warning("HIN login refused: %s", exc)
            return self._hin_refused(request, "Le GLN transmis par votre identité HIN n’est pas valide "
                                              f"({exc}). Faites-le corriger auprès de HIN.")
        except DirectoryError as exc:
            log.warning("HIN login refused: %s", exc)
            return self._hin_refused(request, "Votre identité HIN ne peut pas être acceptée pour ce compte.")
        return self.redirect(target, token)

    async def hin_link(self, request: Request) -> Response:
        """Link the HIN identity of this request to the account logged in by password and SMS code."""
        web_session, physician = await self.current(request)
        await checked_form(request, web_session.csrf_token)
        if web_session.via != "sms":
            return self._hin_refused(request, HIN_LINK_FIRST)
        try:
            identity = self.identity.identify(request)
        except IdentityRefused as exc:
            log.warning("HIN link refused: %s", exc)
            return self._hin_refused(request, "Votre identité HIN n’a pas pu être vérifiée. Passez par "
                                              "http://myhug.hin.ch avec le client HIN actif.")
        ip = client_ip(request)

        def step() -> str | None:
            with self.db.transaction() as session:
                who = session.get(Physician, physician.id)
                assert who is not None
                link_hin_identity(session, who, identity, actor=f"web:{ip}")
                return who.mobile

        try:
            mobile = await run_in_threadpool(step)
        except (DirectoryError, InvalidIdentifier) as exc:
            log.warning("HIN link refused: %s", exc)
            return self._hin_refused(request, "Cette identité HIN ne peut pas être liée à votre compte. "
                                              "Contactez le service de cybersanté des HUG.")
        if mobile:
            try:
                await self.sms.send(mobile, f"myHUG : votre identité HIN {identity.mail} a été liée à votre compte. "
                                            "Si ce n’est pas vous, appelez le service de cybersanté des HUG.")
            except SmsError:
                log.exception("SMS provider failed; the HIN link is recorded in the trail")
        return self.redirect("/documents?info=hin-linked")

    async def password(self, request: Request) -> Response:
        loaded = await run_in_threadpool(self._load, request.cookies.get(COOKIE_NAME))
        if loaded is None or loaded.web_session.stage not in (AUTHENTICATED, PASSWORD_CHANGE):
            return self.redirect("/login?" + urlencode({"next": "/password"}) + ("&expired=1" if loaded is None and
                                 request.cookies.get(COOKIE_NAME) else ""))
        request.state.visit = loaded
        web_session, physician = loaded.web_session, loaded.physician
        if physician.channel != "hosted" or physician.login is None:
            return self.render(request, "error.html", 400, title="Mot de passe",
                               message="Votre accès se fait par votre identité HIN, sans mot de passe.", physician=physician)
        first = web_session.stage == PASSWORD_CHANGE
        if request.method == "GET":
            return self.render(request, "password.html", csrf=web_session.csrf_token, first=first, error=None,
                               physician=None if first else physician)
        form = await checked_form(request, web_session.csrf_token)
        current, new, confirm = (str(form.get(k, "")) for k in ("current", "new", "confirm"))
        ip = client_ip(request)

        def step() -> tuple[str, str]:
            if new != confirm:
                raise WeakPassword("Les deux nouveaux mots de passe ne sont pas identiques.")
            with self.db.transaction() as session:
                who = session.get(Physician, physician.id)
                assert who is not None
                if first:
                    activate_with_password(session, who, current, new)
                else:
                    if not verify_password(who.password_hash, current):
                        raise DirectoryError("the current password is wrong")
                    check_password(new, who.login)
                    who.password_hash = hash_password(new)
                record(session, "password-changed", actor=f"web:{ip}", physician_gln=who.gln)
                destroy_all_for(session, PHYSICIAN, who.id)  # every other session ends with the old password
                token = create_session(session, self.policy, role=PHYSICIAN, subject_id=who.id, stage=AUTHENTICATED, via="sms")
                return token, self.landing_url(who)

        try:
            token, target = await run_in_threadpool(step)
        except WeakPassword as exc:
            error = str(exc)
        except DirectoryError:
            error = "Le mot de passe actuel est incorrect."
        else:
            return self.redirect(target + "?info=password", token)
        return self.render(request, "password.html", 400, csrf=web_session.csrf_token, first=first, error=error,
                           physician=None if first else physician)

    async def logout(self, request: Request) -> Response:
        loaded = await run_in_threadpool(self._load, request.cookies.get(COOKIE_NAME))
        if loaded is None:
            return self.redirect("/login", clear=True)
        request.state.visit = loaded
        web_session, physician = loaded.web_session, loaded.physician
        if request.method == "GET":
            return self.render(request, "logout.html", csrf=web_session.csrf_token, physician=physician)
        await checked_form(request, web_session.csrf_token)
        token, ip = request.cookies.get(COOKIE_NAME), client_ip(request)

        def step() -> None:
            with self.db.transaction() as session:
                destroy_session(session, token)
                record(session, "logout", actor=f"web:{ip}", physician_gln=physician.gln)

        await run_in_threadpool(step)
        return self.redirect("/login?info=logout" + ("&via=hin" if web_session.via == "hin" else ""), clear=True)

    # --- pages ------------------------------------------------------------------

    async def documents(self, request: Request) -> Response:
        web_session, physician = await self.current(request)
        prefs = Preferences.of(physician)
        q = request.query_params
        show = q.get("show") if q.get("show") in DOCUMENT_SHOWS else prefs.documents_show
        try:
            days = max(1, min(3650, int(q.get("days", prefs.documents_days))))
            page = max(1, int(q.get("page", "1")))
        except ValueError:
            raise HTTPException(400, "Paramètre invalide.") from None
        # A `type` in the query, even empty ("Tous les types"), is the physician's choice now; without one,
        # the profile's types apply, and the page says how many documents they hide.
        chosen = "type" in q
        types = tuple(t for t in q.getlist("type") if t in DOCUMENT_TYPES) if chosen \
            else tuple(prefs.document_types)
        sort = q.get("sort") if q.get("sort") in SORTS else "date"
        flt = DocumentFilter(show=show or "all", days=days, types=types, patient_ref=q.get("patient") or None,
                             query=q.get("q", "").strip()[:100], sort=sort or "date")
        by_profile = not chosen and bool(types)

        def load() -> tuple[list[Any], int, int]:
            with self.db.reading() as session:
                items, total = list_documents(session, self.sealer, physician.id, flt, page)
                if not by_profile:
                    return items, total, 0
                _, unfiltered = list_documents(session, self.sealer, physician.id, replace(flt, types=()), page)
                return items, total, unfiltered - total

        items, total, hidden = await run_in_threadpool(load)
        pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)

        def page_query(number: int) -> str:
            """The same filters on another page: every filter survives paging, the types too."""
            params: list[tuple[str, str | int]] = [("show", flt.show), ("days", flt.days)]
            if chosen:
                params += [("type", t) for t in flt.types] or [("type", "")]
            if flt.patient_ref:
                params.append(("patient", flt.patient_ref))
            if flt.query:
                params.append(("q", flt.query))
            if flt.sort != "date":
                params.append(("sort", flt.sort))
            return urlencode([*params, ("page", number)])

        return self.render(request, "documents.html", physician=physician, csrf=web_session.csrf_token, items=items,
                           total=total, page=page, pages=pages, flt=flt, shows=DOCUMENT_SHOWS, page_query=page_query,
                           sorts=SORTS, chosen=chosen,
                           hidden=hidden, by_profile=by_profile,
                           info=q.get("info"))

    async def document(self, request: Request) -> Response:
        web_session, physician = await self.current(request)
        item_id = int(request.path_params["item_id"])
        actor = f"web:{client_ip(request)}"

        def load(session: Session) -> Any:
            return document_detail(session, self.sealer, physician, item_id, actor)

        try:
            summary, files = await run_in_threadpool(self.committed, load)
        except DocumentUnavailable:
            raise HTTPException(404, "Ce document n’existe pas, a été retiré ou n’est plus disponible.") from None
        return self.render(request, "document.html", physician=physician, csrf=web_session.csrf_token,
                           doc=summary, files=files)

    async def document_unread(self, request: Request) -> Response:
        web_session, physician = await self.current(request)
        await checked_form(request, web_session.csrf_token)
        item_id = int(request.path_params["item_id"])
        actor = f"web:{client_ip(request)}"

        def step(session: Session) -> None:
            mark_unread(session, physician, item_id, actor)

        try:
            await run_in_threadpool(self.committed, step)
        except DocumentUnavailable:
            raise HTTPException(404, "Ce document n’existe pas, a été retiré ou n’est plus disponible.") from None
        return self.redirect("/documents?info=unread")

    async def password_forgotten(self, request: Request) -> Response:
        return self.render(request, "forgotten.html")

    async def document_file(self, request: Request) -> Response:
        _, physician = await self.current(request)
        item_id = int(request.path_params["item_id"])
        position = int(request.path_params["position"])
        actor = f"web:{client_ip(request)}"

        def load(session: Session) -> tuple[str, str, bytes]:
            return open_attachment(session, self.sealer, physician, item_id, position, actor)

        try:
            filename, content_type, data = await run_in_threadpool(self.committed, load)
        except DocumentUnavailable:
            raise HTTPException(404, "Ce document n’existe pas, a été retiré ou n’est plus disponible.") from None
        disposition = "attachment" if request.query_params.get("download") else "inline"
        ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
        return Response(
            data, media_type=content_type,
            headers={
                "Content-Disposition": f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}",
                # A document is data, never code in our origin: no scripts, no plugins.
                "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; plugin-types application/pdf",
            },
        )

    async def patients(self, request: Request) -> Response:
        web_session, physician = await self.current(request)
        prefs = Preferences.of(physician)
        query = request.query_params.get("q", "").strip()[:100]

        def load() -> list[Any]:
            with self.db.reading() as session:
                return list_patients(session, self.sealer, physician.id, prefs.patients_show, prefs.patients_days,
                                     query)

        patients = await run_in_threadpool(load)
        return self.render(request, "patients.html", physician=physician, csrf=web_session.csrf_token,
                           patients=patients, prefs=prefs, shows=PATIENT_SHOWS, query=query)

    async def profile(self, request: Request) -> Response:
        web_session, physician = await self.current(request)
        error, saved = None, False
        if request.method == "POST":
            form = await checked_form(request, web_session.csrf_token)
            values: dict[str, Any] = {k: v for k, v in form.items() if k not in ("specialties", "document_types", "csrf")}
            values["specialties"] = form.getlist("specialties")
            values["document_types"] = form.getlist("document_types")
            actor = f"web:{client_ip(request)}"

            def save() -> Physician:
                with self.db.transaction() as session:
                    who = session.get(Physician, physician.id)
                    assert who is not None
                    was_off = who.notification_mode == "none"
                    update_profile(session, who, values, actor)
                    if was_off and who.notification_mode != "none":
                        skip_waiting(session, who.id)
                    session.flush()
                    _ = who.specialties
                    session.expunge(who)
                    return who

            try:
                physician = await run_in_threadpool(save)
                saved = True
            except ProfileError as exc:
                error = str(exc)
        return self.render(request, "profile.html", 400 if error else 200, physician=physician,
                           csrf=web_session.csrf_token, prefs=Preferences.of(physician), error=error, saved=saved,
                           specialty_groups=specialty_groups(), landing_pages=LANDING_PAGES,
                           document_shows=DOCUMENT_SHOWS, patient_shows=PATIENT_SHOWS,
                           selected={s.code for s in physician.specialties})


@dataclass(frozen=True)
class Visit:
    """One authenticated request: the session, the physician, and what the layout shows on every page."""

    web_session: WebSession
    physician: Physician
    unread: int
    previous_login: datetime | None


def _local_target(request: Request) -> str:
    """This page as a local URL to come back to (the path and query of a GET; the path of a POST)."""
    path = request.url.path
    if request.method == "GET" and request.url.query:
        path += "?" + request.url.query
    return path


def _safe_next(target: str) -> str:
    """A `next` that stays on this site, on a page behind the login; anything else is dropped."""
    if not target.startswith("/") or target.startswith(("//", "/\\")) or any(c in target for c in "\r\n\\"):
        return ""
    if target.split("?", 1)[0] in ("/login", "/login/sms", "/logout", "/hin/login", "/hin/link"):
        return ""
    return target


def _welcome(target: str, hin: bool = False) -> str:
    """The first page after a login shows the previous login (and, after HIN, says how the physician got in)."""
    extra = "welcome=" + ("hin" if hin else "1")
    return target + ("&" if "?" in target else "?") + extra


def _mask_mobile(mobile: str | None) -> str:
    return f"•••• {mobile[-2:]}" if mobile else ""
