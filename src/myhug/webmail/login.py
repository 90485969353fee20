"""Logging in and out: password and SMS code, HIN identity (and linking it), the password pages."""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from myhug.audit.trail import record
from myhug.crypto.passwords import hash_password, verify_password
from myhug.directory.identifiers import InvalidIdentifier
from myhug.directory.models import Assistant, Physician
from myhug.directory.password_policy import WeakPassword, check_password
from myhug.directory.service import (
    AccountSuspended,
    DirectoryError,
    HinIdentityMismatch,
    HinLinkRequired,
    activate_hin_identity,
    activate_with_password,
    link_hin_identity,
)
from myhug.webmail import auth
from myhug.webmail.base import COOKIE_NAME, WebmailBase
from myhug.webmail.delegates import assistant_password
from myhug.webmail.identity import GroupAccountRefused, IdentityRefused
from myhug.websecurity.devices import (
    DEVICE_COOKIE,
    REVOKED_BY_PASSWORD_CHANGE,
    revoke_all_devices,
    trust_device,
    use_trusted_device,
)
from myhug.websecurity.forms import PRE_COOKIE, LoginRefused, checked_form, client_ip, set_cookie
from myhug.websecurity.models import WebSession
from myhug.websecurity.sessions import (
    ASSISTANT,
    AUTHENTICATED,
    PASSWORD_CHANGE,
    PHYSICIAN,
    SMS_PENDING,
    create_session,
    destroy_all_for,
    destroy_session,
)
from myhug.websecurity.sms import SmsError

log = logging.getLogger(__name__)

HIN_LINK_FIRST = ("Un compte myHUG existe déjà pour votre GLN, avec un accès par mot de passe et code SMS. Pour y "
                  "lier votre identité HIN, connectez-vous une fois avec votre mot de passe et le code SMS, puis "
                  "revenez à cette adresse ; ou adressez-vous au service de cybersanté des HUG.")

GROUP_REFUSED = ("Les comptes de cabinet (HIN « Group ») ne sont pas acceptés ; connectez-vous avec votre identité "
                 "HIN personnelle.")


class LoginPages(WebmailBase):
    """The login family of pages."""

    async def home(self, request: Request) -> Response:
        visit = await run_in_threadpool(self._load, request.cookies.get(COOKIE_NAME))
        if visit is not None and visit.web_session.stage == AUTHENTICATED:
            return self.redirect(self.landing_url(visit.physician))
        try:
            self.identity.identify(request)
        except GroupAccountRefused:  # a practice account through the access gateway: say so, as /hin/login does
            return self._hin_refused(request, GROUP_REFUSED)
        except IdentityRefused:
            return self.redirect("/login")
        if visit is None:
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

        device_token = request.cookies.get(DEVICE_COOKIE)

        def step(session: Session) -> tuple[str, auth.SmsChallenge | str]:
            account = auth.check_password(session, login, password, ip)
            if isinstance(account, Assistant):  # an assistant: always the SMS code (no trusted device)
                challenge = auth.open_challenge(session, account, ip, self.settings.sms.max_codes_per_hour)
                return create_session(session, self.policy, role=ASSISTANT, subject_id=account.id, stage=SMS_PENDING,
                                      via="sms", challenge_id=challenge.challenge_id), challenge
            physician = account
            device = use_trusted_device(session, physician, device_token)
            if device is not None:  # a browser the physician trusts: the password was the step, no SMS code
                auth.trusted_login(session, physician)
                stage = PASSWORD_CHANGE if physician.password_must_change else AUTHENTICATED
                token = create_session(session, self.policy, role=PHYSICIAN, subject_id=physician.id, stage=stage,
                                       via="device")
                record(session, "login", actor=f"web:{ip}", physician_gln=physician.gln,
                       detail={"via": "password+trusted-device", "device": device.id})
                return token, "/password" if stage == PASSWORD_CHANGE else _welcome(
                    next_url or self.landing_url(physician))
            challenge = auth.open_challenge(session, physician, ip, self.settings.sms.max_codes_per_hour)
            token = create_session(session, self.policy, role=PHYSICIAN, subject_id=physician.id, stage=SMS_PENDING,
                                   via="sms", challenge_id=challenge.challenge_id)
            return token, challenge

        try:
            token, challenge = await run_in_threadpool(self.committed, step)
        except LoginRefused as exc:
            return self._login_form(request, error=str(exc), status_code=401, login=login)
        if isinstance(challenge, str):
            return self.redirect(challenge, token)
        try:
            await self.sms.send(challenge.mobile, auth.sms_text(challenge.code))
        except SmsError:
            log.exception("SMS provider failed")
            return self._login_form(request, error="L’envoi du code SMS a échoué. Réessayez dans un instant.",
                                    status_code=503, login=login)
        return self.redirect("/login/sms" + (f"?{urlencode({'next': next_url})}" if next_url else ""), token)

    def _login_form(self, request: Request, error: str | None = None, status_code: int = 200,
                    login: str = "") -> Response:
        csrf = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
        q = request.query_params
        response = self.render(request, "login.html", status_code, csrf=csrf, error=error, login=login,
                               next_url=_safe_next(q.get("next", "")), expired=q.get("expired") == "1",
                               suspended=auth.SUSPENDED if q.get("suspended") == "1" else None,
                               hin_present=self._hin_identity_present(request),
                               passkeys_on=bool(self.settings.web.public_url),
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

        trust = form.get("trust") == "1"
        user_agent = request.headers.get("user-agent", "")

        def step(session: Session) -> tuple[str, str, str | None]:
            who = auth.verify_code(session, web_session.challenge_id or "", code, ip)
            destroy_session(session, old_token)  # a new session id at login
            stage = PASSWORD_CHANGE if who.password_must_change else AUTHENTICATED
            if isinstance(who, Assistant):
                token = create_session(session, self.policy, role=ASSISTANT, subject_id=who.id, stage=stage, via="sms")
                record(session, "login", actor=f"web:{ip}", detail={"via": "sms", "assistant": who.login})
                return token, "/password" if stage == PASSWORD_CHANGE else _welcome(next_url or "/documents"), None
            token = create_session(session, self.policy, role=PHYSICIAN, subject_id=who.id, stage=stage, via="sms")
            record(session, "login", actor=f"web:{ip}", physician_gln=who.gln, detail={"via": "sms"})
            device = trust_device(session, who, user_agent, self.settings.web.trusted_device_days,
                                  f"web:{ip}") if trust else None
            if stage == PASSWORD_CHANGE:
                return token, "/password", device
            return token, _welcome(next_url or self.landing_url(who)), device

        try:
            token, target, device = await run_in_threadpool(self.committed, step)
        except LoginRefused as exc:
            if str(exc) == auth.CODE_EXPIRED:
                await run_in_threadpool(self._drop, old_token)
                return self._login_form(request, error=str(exc), status_code=401)
            return self._sms_form(request, web_session, physician, 401, error=str(exc), next_url=next_url)
        response = self.redirect(target, token)
        if device is not None:
            set_cookie(response, DEVICE_COOKIE, device, max_age=self.settings.web.trusted_device_days * 86400)
        return response

    def _sms_form(self, request: Request, web_session: WebSession, physician: Physician, status_code: int = 200,
                  error: str | None = None, info: str | None = None, next_url: str | None = None) -> Response:
        visit = request.state.visit
        return self.render(request, "login_sms.html", status_code, csrf=web_session.csrf_token, error=error, info=info,
                           mobile_hint=_mask_mobile(visit.account_mobile), code_minutes=auth.CODE_TTL_MINUTES,
                           # A trusted device is a physician's choice; an assistant always types the code.
                           trust_days=None if web_session.role == ASSISTANT else self.settings.web.trusted_device_days,
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
            return self._hin_refused(request, GROUP_REFUSED)
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
                                              f"({exc.in_french.rstrip('.')}). Faites-le corriger auprès de HIN.")
        except DirectoryError as exc:
            log.warning("HIN login refused: %s", exc)
            return self._hin_refused(request, "Votre identité HIN ne peut pas être acceptée pour ce compte.")
        return self.redirect(target, token)

    async def hin_link(self, request: Request) -> Response:
        """Link the HIN identity of this request to the account logged in by password and SMS code."""
        web_session, physician = await self.current(request, own_only=True)
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
        if web_session.role == ASSISTANT:  # the assistant's own password, never the physician's
            return await assistant_password(self, request, loaded)
        if loaded.own is not None:  # a stand-in reading for a colleague: the password is the stand-in's own
            physician = loaded.own
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
                revoke_all_devices(session, who, REVOKED_BY_PASSWORD_CHANGE, f"web:{ip}")  # and every trusted browser
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

    async def password_forgotten(self, request: Request) -> Response:
        return self.render(request, "forgotten.html")


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

