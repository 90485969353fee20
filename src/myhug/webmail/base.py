"""The webmail's shared base: the parts it is wired to, page rendering, redirects, and the session of a visit.

Each page family (login, documents, patients, profile) is a class over this base; `webmail.app.Webmail`
combines them and lists the routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from myhug.blobs.store import Sealer
from myhug.config.settings import Settings
from myhug.db.base import utcnow
from myhug.db.session import Database
from myhug.directory.delegation import Delegate, readable_for
from myhug.directory.models import Assistant, Physician
from myhug.directory.profile import DOCUMENT_TYPES, Preferences
from myhug.mailbox.reading import DocumentUnavailable, unread_count
from myhug.webmail import auth
from myhug.webmail.identity import identity_provider
from myhug.websecurity.forms import LoginRefused, Redirect, clear_cookie, set_cookie
from myhug.websecurity.models import WebSession
from myhug.websecurity.pages import Pages
from myhug.websecurity.sessions import (
    ASSISTANT,
    AUTHENTICATED,
    PASSWORD_CHANGE,
    PHYSICIAN,
    SMS_PENDING,
    SessionPolicy,
    destroy_session,
    ended_reason,
    load_session,
)
from myhug.websecurity.sms import SmsProvider

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE_NAME = "__Host-myhug"
T = TypeVar("T")


class WebmailBase:
    """Wired explicitly to the parts the pages use."""

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

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        visit = getattr(request.state, "visit", None)
        if visit is not None and context.get("physician") is not None:
            # The layout's unread count and the note saying when the idle session closes.
            context.setdefault("unread_count", visit.unread)
            context.setdefault("previous_login", visit.previous_login)
            context.setdefault("idle_seconds", int(self.policy.idle.total_seconds()))
            context.setdefault("idle_until", utcnow() + self.policy.idle)
            context.setdefault("delegate", visit.delegate)  # someone reading for the physician, and for whom else
            context.setdefault("readable", visit.readable)
            context.setdefault("own", visit.own)
            context.setdefault("is_assistant", visit.web_session.role == ASSISTANT)
        return self.pages.render(request, template, status_code, **context)

    def redirect(self, url: str, token: str | None = None, clear: bool = False) -> Response:
        response = RedirectResponse(url, status_code=303)
        if token is not None:
            self.set_session_cookie(response, token)
        if clear:
            clear_cookie(response, COOKIE_NAME)
        return response

    def set_session_cookie(self, response: Response, token: str) -> None:
        """The session's `__Host-` cookie, living as long as the session may."""
        set_cookie(response, COOKIE_NAME, token, max_age=int(self.policy.absolute.total_seconds()))

    def _load(self, token: str | None, welcome: bool = False) -> Visit | None:
        return self._load_why(token, welcome)[0]

    def _load_why(self, token: str | None, welcome: bool = False) -> tuple[Visit | None, str | None]:
        """The visit of this session, or None and why there is none: "suspended" when the account was suspended
        during the session (the session ends then), "no-link" for an assistant no physician links (any more),
        else None (no session, or it expired)."""
        with self.db.transaction() as session:
            ended = ended_reason(session, token)
            if ended is not None:
                return None, ended
            web_session = load_session(session, self.policy, token, (PHYSICIAN, ASSISTANT))
            if web_session is None:
                return None, None
            delegate: Delegate | None = None
            own: Physician | None = None
            readable: list[Physician] = []
            if web_session.role == ASSISTANT:
                assistant = session.get(Assistant, web_session.assistant_id or 0)
                if assistant is None or assistant.status == "suspended":
                    destroy_session(session, token)
                    return None, "suspended" if assistant is not None else None
                delegate = Delegate.assistant(assistant)
                mobile: str | None = assistant.mobile
                readable = readable_for(session, assistant_id=assistant.id)
                physician = next((p for p in readable if p.id == web_session.acting_for_id),
                                 readable[0] if readable else None)
                if physician is None:  # every physician ended the link: nothing to read, say so
                    destroy_session(session, token)
                    return None, "no-link"
            else:
                physician = session.get(Physician, web_session.physician_id or 0)
                if physician is None or physician.status == "suspended":
                    destroy_session(session, token)
                    return None, "suspended" if physician is not None else None
                mobile = physician.mobile
                if web_session.acting_for_id is not None:  # a stand-in reading for an absent colleague
                    readable = readable_for(session, stand_in_id=physician.id)
                    colleague = next((p for p in readable if p.id == web_session.acting_for_id), None)
                    if colleague is None:  # the window closed, or the link ended: back to one's own documents
                        web_session.acting_for_id = None
                    else:
                        own, delegate, physician = physician, Delegate.stand_in(physician), colleague
            unread = unread_count(session, physician.id) if web_session.stage == AUTHENTICATED else 0
            previous = auth.previous_login(session, (own or physician).gln) if welcome and delegate is None else None
            session.expunge_all()
            return Visit(web_session, physician, unread, previous, delegate, own, tuple(readable), mobile), None

    async def current(self, request: Request, stage: str = AUTHENTICATED,
                      own_only: bool = False) -> tuple[WebSession, Physician]:
        """The session at `stage`; otherwise redirect to where the physician stands in the login.

        Without a live session, the login page says whether one expired, and brings the
        physician back to this page afterwards (a POST's data cannot be kept: its page is).
        `own_only` pages (the profile, the login means, the unread marks) are the
        physician's own: someone reading for the physician gets 403.
        """
        token = request.cookies.get(COOKIE_NAME)
        visit, why = await run_in_threadpool(self._load_why, token, "welcome" in request.query_params)
        if visit is None:
            if why in ("suspended", "no-link"):  # not an idle timeout: say what happened, and whom to call
                raise Redirect(f"/login?{why}=1")
            params = {"next": _local_target(request)}
            if token:
                params["expired"] = "1"
            raise Redirect("/login?" + urlencode(params))
        if visit.web_session.stage != stage:
            raise Redirect({SMS_PENDING: "/login/sms", PASSWORD_CHANGE: "/password"}.get(visit.web_session.stage,
                                                                                         "/documents"))
        request.state.visit = visit
        if own_only and visit.delegate is not None:
            raise HTTPException(403, "Cette page est réservée au médecin titulaire du compte.")
        return visit.web_session, visit.physician

    def delegate_of(self, request: Request) -> Delegate | None:
        """Who reads for the physician on this request, if not the physician."""
        visit = getattr(request.state, "visit", None)
        return visit.delegate if visit is not None else None

    def landing_url(self, physician: Physician) -> str:
        return "/" + Preferences.of(physician).landing

    def committed(self, work: Callable[[Session], T]) -> T:
        return self.db.run_keeping_refusal(work, (LoginRefused, DocumentUnavailable))



@dataclass(frozen=True)
class Visit:
    """One authenticated request: the session, the physician, and what the layout shows on every page.

    `physician` is whose documents the pages show. When someone reads for
    that physician, `delegate` names them (an assistant, or a stand-in,
    whose own account is `own`), and `readable` lists every physician they
    may read for, for the switch between them.
    """

    web_session: WebSession
    physician: Physician
    unread: int
    previous_login: datetime | None
    delegate: Delegate | None = None
    own: Physician | None = None  # a stand-in's own account, while reading for a colleague
    readable: tuple[Physician, ...] = ()
    account_mobile: str | None = None  # the phone of whoever logs in (the SMS step's hint)



def _local_target(request: Request) -> str:
    """This page as a local URL to come back to (the path and query of a GET; the path of a POST)."""
    path = request.url.path
    if request.method == "GET" and request.url.query:
        path += "?" + request.url.query
    return path

