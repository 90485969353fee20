"""How a physician logs in besides password + SMS code: passkeys and trusted devices ("Connexion et sécurité").

A passkey is added only in a session opened with the password and an SMS
code, less than `FRESH_LOGIN` ago: a stolen session, or a trusted browser,
cannot add one. The WebAuthn ceremonies need JavaScript (`/static/passkey.js`);
everything else on the page is plain forms.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from myhug.audit.trail import record
from myhug.db.base import utcnow
from myhug.directory.models import Assistant, Physician
from myhug.webmail import auth
from myhug.webmail.base import COOKIE_NAME, WebmailBase
from myhug.websecurity.devices import revoke_device, trusted_devices
from myhug.websecurity.forms import PRE_COOKIE, LoginRefused, checked_form, client_ip
from myhug.websecurity.models import WebSession
from myhug.websecurity.passkeys import (
    KINDS,
    PasskeyRejected,
    RelyingParty,
    authenticate,
    login_options,
    passkeys_of,
    register,
    registration_options,
    remove_passkey,
)
from myhug.websecurity.sessions import (
    ASSISTANT,
    AUTHENTICATED,
    PASSWORD_CHANGE,
    PHYSICIAN,
    create_session,
    destroy_session,
)

FRESH_LOGIN = timedelta(minutes=15)
NOT_FRESH = ("Pour ajouter une clé d’accès, reconnectez-vous d’abord avec votre mot de passe et le code SMS "
             "(il y a moins de 15 minutes).")


class AccessPages(WebmailBase):
    """"Connexion et sécurité" in "Mon profil", and the login by passkey."""

    @property
    def relying_party(self) -> RelyingParty | None:
        return RelyingParty.of(self.settings.web.public_url)

    def _rp(self) -> RelyingParty:
        rp = self.relying_party
        if rp is None:  # `web.public_url` unset: the address passkeys bind to is unknown, so they are off
            raise HTTPException(404, "Les clés d’accès ne sont pas activées sur ce serveur.")
        return rp

    async def _mine(self, request: Request) -> tuple[WebSession, Physician]:
        """The session of whoever manages their own login means here: a physician, or an assistant (whose
        passkeys are their own); a stand-in reading for a colleague gets 403."""
        web_session, physician = await self.current(request)
        if web_session.role != ASSISTANT and request.state.visit.delegate is not None:
            raise HTTPException(403, "Cette page est réservée au médecin titulaire du compte.")
        return web_session, physician

    @staticmethod
    def _holder(session: Session, web_session: WebSession, physician: Physician) -> Physician | Assistant:
        """The account whose passkeys these are, loaded in `session`."""
        holder = (session.get(Assistant, web_session.assistant_id) if web_session.role == ASSISTANT
                  else session.get(Physician, physician.id))
        assert holder is not None
        return holder

    async def access(self, request: Request) -> Response:
        web_session, physician = await self._mine(request)

        def load(session: Session) -> tuple[list[Any], list[Any]]:
            holder = self._holder(session, web_session, physician)
            keys = passkeys_of(session, holder)
            devices = trusted_devices(session, physician.id) if web_session.role != ASSISTANT else []
            session.expunge_all()
            return keys, devices

        passkeys, devices = await run_in_threadpool(self.committed, load)
        fresh = web_session.via == "sms" and utcnow() - web_session.created_at < FRESH_LOGIN
        return self.render(request, "access.html", physician=physician, csrf=web_session.csrf_token,
                           passkeys=passkeys, devices=devices, kinds=KINDS, fresh=fresh,
                           passkeys_on=self.relying_party is not None,
                           hosted=physician.channel == "hosted" or web_session.role == ASSISTANT,
                           info=request.query_params.get("info"), not_fresh=NOT_FRESH)

    async def passkey_options(self, request: Request) -> Response:
        web_session, physician = await self._mine(request)
        await checked_form(request, web_session.csrf_token)
        rp = self._rp()
        if web_session.via != "sms" or utcnow() - web_session.created_at >= FRESH_LOGIN:
            return JSONResponse({"error": NOT_FRESH}, 403)
        token = request.cookies.get(COOKIE_NAME) or ""

        def step(session: Session) -> str:
            return registration_options(session, rp, self._holder(session, web_session, physician), token)

        return Response(await run_in_threadpool(self.committed, step), media_type="application/json")

    async def passkey_add(self, request: Request) -> Response:
        web_session, physician = await self._mine(request)
        form = await checked_form(request, web_session.csrf_token)
        rp = self._rp()
        if web_session.via != "sms" or utcnow() - web_session.created_at >= FRESH_LOGIN:
            return JSONResponse({"error": NOT_FRESH}, 403)
        token, actor = request.cookies.get(COOKIE_NAME) or "", f"web:{client_ip(request)}"
        credential, name = str(form.get("credential", "")), str(form.get("name", ""))

        def step(session: Session) -> None:
            register(session, rp, self._holder(session, web_session, physician), token, credential, name, actor)

        try:
            await run_in_threadpool(self.committed, step)
        except LoginRefused as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"redirect": "/profile/acces?info=passkey-added"})

    async def passkey_remove(self, request: Request) -> Response:
        web_session, physician = await self._mine(request)
        await checked_form(request, web_session.csrf_token)
        passkey_id, actor = int(request.path_params["passkey_id"]), f"web:{client_ip(request)}"

        def step(session: Session) -> bool:
            return remove_passkey(session, self._holder(session, web_session, physician), passkey_id, actor)

        if not await run_in_threadpool(self.committed, step):
            raise HTTPException(404, "Cette clé d’accès n’existe pas.")
        return self.redirect("/profile/acces?info=passkey-removed")

    async def device_revoke(self, request: Request) -> Response:
        web_session, physician = await self.current(request, own_only=True)
        await checked_form(request, web_session.csrf_token)
        device_id, actor = int(request.path_params["device_id"]), f"web:{client_ip(request)}"

        def step(session: Session) -> bool:
            return revoke_device(session, physician, device_id, actor)

        if not await run_in_threadpool(self.committed, step):
            raise HTTPException(404, "Cet appareil n’existe pas.")
        return self.redirect("/profile/acces?info=device-revoked")

    # --- login by passkey -------------------------------------------------------------

    async def login_passkey_options(self, request: Request) -> Response:
        browser = request.cookies.get(PRE_COOKIE)
        await checked_form(request, browser)
        rp = self._rp()

        def step(session: Session) -> str:
            return login_options(session, rp, browser or "")

        return Response(await run_in_threadpool(self.committed, step), media_type="application/json")

    async def login_passkey(self, request: Request) -> Response:
        browser = request.cookies.get(PRE_COOKIE)
        form = await checked_form(request, browser)
        rp = self._rp()
        credential, ip, old_token = str(form.get("credential", "")), client_ip(request), request.cookies.get(COOKIE_NAME)

        def step(session: Session) -> tuple[str, str]:
            try:
                passkey = authenticate(session, rp, browser or "", credential)
            except PasskeyRejected as exc:  # a known passkey that did not verify: forged, replayed or cloned
                who = session.get(Physician, exc.passkey.physician_id) if exc.passkey.physician_id else None
                record(session, "login-failed", actor=f"web:{ip}", outcome="failure",
                       physician_gln=who.gln if who else None,
                       detail={"step": "passkey", "passkey": exc.passkey.id, "reason": exc.reason[:200]})
                raise
            # The passkey's holder: an assistant (their own session, reading for the physicians who linked
            # them) or a physician.
            account: Assistant | Physician | None = (
                session.get(Assistant, passkey.assistant_id) if passkey.assistant_id is not None
                else session.get(Physician, passkey.physician_id))
            if account is None or account.status == "suspended":
                raise LoginRefused(auth.SUSPENDED)
            assistant = isinstance(account, Assistant)
            destroy_session(session, old_token)
            stage = PASSWORD_CHANGE if account.password_must_change else AUTHENTICATED
            token = create_session(session, self.policy, role=ASSISTANT if assistant else PHYSICIAN,
                                   subject_id=account.id, stage=stage, via="passkey")
            record(session, "login", actor=f"web:{ip}", physician_gln=account.gln,
                   detail={"via": "passkey", "authenticator": passkey.kind, "passkey": passkey.id,
                           **({"assistant": account.login} if assistant else {})})
            if stage == PASSWORD_CHANGE:
                return token, "/password"
            landing = "/documents" if isinstance(account, Assistant) else self.landing_url(account)
            return token, landing + "?welcome=1"

        try:
            token, target = await run_in_threadpool(self.committed, step)
        except LoginRefused as exc:
            return JSONResponse({"error": str(exc)}, 401)
        response = JSONResponse({"redirect": target})
        self.set_session_cookie(response, token)
        return response

