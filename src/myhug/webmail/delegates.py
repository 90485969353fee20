"""Reading for someone else: assistants and stand-ins (`directory.delegation`).

- "Mon profil" → "Assistant·e·s et remplaçant·e·s": the physician sees the
  assistants the desk linked, chooses whether they get the notifications,
  names a stand-in by GLN with a first and a last day, and ends any link.
- A stand-in finds the absent colleagues in "Remplacements" and switches to
  "Documents de Dr X (remplacement)"; an assistant switches between the
  physicians it reads for. The switch is the session's `acting_for_id`,
  checked again on every request (`WebmailBase._load_why`).
- An assistant's own password (the first login's temporary one, then
  changes) is handled here: the physician's pages never see it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from myhug.audit.trail import record
from myhug.crypto.passwords import hash_password, verify_password
from myhug.directory.delegation import (
    add_stand_in,
    end_delegation,
    links_of,
    may_read_for,
    readable_for,
    set_notify,
    today,
)
from myhug.directory.models import Assistant, Physician
from myhug.directory.password_policy import WeakPassword, check_password
from myhug.directory.service import DirectoryError
from myhug.webmail.base import COOKIE_NAME, Visit, WebmailBase
from myhug.websecurity.forms import checked_form, client_ip
from myhug.websecurity.models import WebSession
from myhug.websecurity.sessions import ASSISTANT, AUTHENTICATED, create_session, destroy_all_for, find_session


def _swiss_day(text: str) -> date:
    """A day as typed in a Swiss form: 24.12.2026 (or the ISO 2026-12-24 a date field sends)."""
    text = text.strip()
    try:
        if "." in text:
            day, month, year = (int(part) for part in text.split("."))
            return date(year if year > 99 else 2000 + year, month, day)
        return date.fromisoformat(text)
    except ValueError:
        raise DirectoryError(f"invalid date {text!r}", french=f"Date invalide : « {text} » (JJ.MM.AAAA).") from None


class DelegatePages(WebmailBase):
    """The pages of delegation: the physician's links, the switch, the assistant's password."""

    async def delegation(self, request: Request) -> Response:
        web_session, physician = await self.current(request, own_only=True)
        error: str | None = None
        if request.method == "POST":
            form = await checked_form(request, web_session.csrf_token)
            actor = f"web:{client_ip(request)}"

            def step(session: Session) -> None:
                who = session.get(Physician, physician.id)
                assert who is not None
                add_stand_in(session, who, str(form.get("gln", "")), _swiss_day(str(form.get("from", ""))),
                             _swiss_day(str(form.get("to", ""))), actor)

            try:
                await run_in_threadpool(self.committed_directory, step)
                return self.redirect("/profile/delegation?info=stand-in")
            except DirectoryError as exc:
                error = exc.in_french

        def load(session: Session) -> list[Any]:
            return links_of(session, physician.id)

        links = await run_in_threadpool(self.committed, load)
        return self.render(request, "delegation.html", 400 if error else 200, physician=physician,
                           csrf=web_session.csrf_token, links=links, error=error, today=today(),
                           info=request.query_params.get("info"))

    def committed_directory(self, work: Any) -> Any:
        return self.db.run_keeping_refusal(work, (DirectoryError,))

    async def delegation_end(self, request: Request) -> Response:
        web_session, physician = await self.current(request, own_only=True)
        await checked_form(request, web_session.csrf_token)
        link_id, actor = int(request.path_params["link_id"]), f"web:{client_ip(request)}"

        def step(session: Session) -> bool:
            who = session.get(Physician, physician.id)
            assert who is not None
            return end_delegation(session, who, link_id, actor)

        if not await run_in_threadpool(self.committed, step):
            raise HTTPException(404, "Ce lien n’existe pas ou est déjà terminé.")
        return self.redirect("/profile/delegation?info=ended")

    async def delegation_notify(self, request: Request) -> Response:
        web_session, physician = await self.current(request, own_only=True)
        form = await checked_form(request, web_session.csrf_token)
        link_id, notify = int(request.path_params["link_id"]), form.get("notify") == "1"

        def step(session: Session) -> bool:
            who = session.get(Physician, physician.id)
            assert who is not None
            return set_notify(session, who, link_id, notify)

        if not await run_in_threadpool(self.committed, step):
            raise HTTPException(404, "Ce lien n’existe pas ou est déjà terminé.")
        return self.redirect("/profile/delegation?info=" + ("notify-on" if notify else "notify-off"))

    async def stand_ins(self, request: Request) -> Response:
        """"Remplacements": the colleagues the physician stands in for today."""
        web_session, physician = await self.current(request)
        visit: Visit = request.state.visit
        if web_session.role == ASSISTANT:
            return self.redirect("/documents")
        own = visit.own or physician

        def load(session: Session) -> list[Physician]:
            colleagues = readable_for(session, stand_in_id=own.id)
            session.expunge_all()
            return colleagues

        colleagues = await run_in_threadpool(self.committed, load)
        return self.render(request, "stand_ins.html", physician=physician, csrf=web_session.csrf_token,
                           colleagues=colleagues)

    async def switch(self, request: Request) -> Response:
        """Read for another physician (`owner` = their id), or, for a stand-in, back to one's own (`self`)."""
        web_session, physician = await self.current(request)
        form = await checked_form(request, web_session.csrf_token)
        visit: Visit = request.state.visit
        owner = str(form.get("owner", ""))
        token = request.cookies.get(COOKIE_NAME)

        def step(session: Session) -> bool:
            row = find_session(session, token)
            assert row is not None
            if owner == "self" and row.role != ASSISTANT:
                row.acting_for_id = None
                return True
            try:
                owner_id = int(owner)
            except ValueError:
                return False
            allowed = (may_read_for(session, owner_id, assistant_id=row.assistant_id) if row.role == ASSISTANT
                       else may_read_for(session, owner_id, stand_in_id=(visit.own or physician).id))
            if allowed:
                row.acting_for_id = owner_id
            return allowed

        if not await run_in_threadpool(self.committed, step):
            raise HTTPException(404, "Vous ne lisez pas pour ce médecin.")
        return self.redirect("/documents")


async def assistant_password(pages: WebmailBase, request: Request, visit: Visit) -> Response:
    """The assistant's own password: the temporary one at the first login, or a change later."""
    web_session = visit.web_session
    first = web_session.stage != AUTHENTICATED
    context: dict[str, Any] = {"csrf": web_session.csrf_token, "first": first,
                               "physician": None if first else visit.physician}
    if request.method == "GET":
        return pages.render(request, "password.html", error=None, **context)
    form = await checked_form(request, web_session.csrf_token)
    current, new, confirm = (str(form.get(k, "")) for k in ("current", "new", "confirm"))
    ip = client_ip(request)

    def step(session: Session) -> tuple[str, str]:
        if new != confirm:
            raise WeakPassword("Les deux nouveaux mots de passe ne sont pas identiques.")
        row: WebSession | None = find_session(session, request.cookies.get(COOKIE_NAME))
        assistant = session.get(Assistant, row.assistant_id if row else 0)
        assert assistant is not None
        if not verify_password(assistant.password_hash, current):
            raise DirectoryError("the current password is wrong")
        check_password(new, assistant.login)
        assistant.password_hash = hash_password(new)
        assistant.password_must_change = False
        if assistant.status == "registered":
            assistant.status = "activated"
        record(session, "password-changed", actor=f"web:{ip}", detail={"assistant": assistant.login})
        destroy_all_for(session, ASSISTANT, assistant.id)
        token = create_session(session, pages.policy, role=ASSISTANT, subject_id=assistant.id,
                               stage=AUTHENTICATED, via="sms")
        return token, "/documents"

    try:
        token, target = await run_in_threadpool(lambda: pages.db.run(step))
    except WeakPassword as exc:
        error = str(exc)
    except DirectoryError:
        error = "Le mot de passe actuel est incorrect."
    else:
        return pages.redirect(target + "?info=password", token)
    return pages.render(request, "password.html", 400, error=error, **context)
