"""Server-side browser sessions, one kind for physicians and staff: a random token in the cookie,
its hash in the database, a role, an idle and an absolute timeout."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from myhug.db.base import utcnow
from myhug.websecurity.models import WebSession

PHYSICIAN = "physician"
STAFF = "staff"
ASSISTANT = "assistant"  # a practice assistant reading for the physicians who linked it

PRE_AUTH_LIFETIME = timedelta(minutes=10)  # between the password and the SMS code

AUTHENTICATED = "authenticated"
SMS_PENDING = "sms"
PASSWORD_CHANGE = "password-change"
ENDED = "ended:"  # the stage of a session ended by someone else, with the reason after it (`end_all_for`)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionPolicy:
    """The cookie a role's sessions travel in, and how long they live."""

    cookie: str
    idle: timedelta
    absolute: timedelta


def create_session(db_session: Session, policy: SessionPolicy, *, role: str, subject_id: int, stage: str,
                   via: str, challenge_id: str | None = None) -> str:
    """A new session; returns the cookie token (shown once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    lifetime = policy.absolute if stage == AUTHENTICATED else PRE_AUTH_LIFETIME
    db_session.add(
        WebSession(
            token_hash=_hash(token), role=role, physician_id=subject_id if role == PHYSICIAN else None,
            staff_id=subject_id if role == STAFF else None, assistant_id=subject_id if role == ASSISTANT else None,
            stage=stage, via=via,
            csrf_token=secrets.token_urlsafe(32), challenge_id=challenge_id, pending=None,
            created_at=now, last_seen_at=now, expires_at=now + lifetime,
        )
    )
    return token


def load_session(db_session: Session, policy: SessionPolicy, token: str | None,
                 role: str | tuple[str, ...]) -> WebSession | None:
    """The live session of this role (or roles) for a cookie token, touching its idle timer; expired ones are deleted."""
    if not token:
        return None
    web_session = db_session.get(WebSession, _hash(token))
    if web_session is None or web_session.role not in ((role,) if isinstance(role, str) else role):
        return None
    if web_session.stage.startswith(ENDED):
        db_session.delete(web_session)
        return None
    now = utcnow()
    if now >= web_session.expires_at or now - web_session.last_seen_at >= policy.idle:
        db_session.delete(web_session)
        return None
    web_session.last_seen_at = now
    return web_session


def find_session(db_session: Session, token: str | None) -> WebSession | None:
    """The session row of a token, without any check (the caller already loaded it this request)."""
    return db_session.get(WebSession, _hash(token)) if token else None


def destroy_session(db_session: Session, token: str | None) -> None:
    if token:
        db_session.execute(delete(WebSession).where(WebSession.token_hash == _hash(token)))


def end_all_for(db_session: Session, role: str, subject_id: int, reason: str) -> None:
    """End someone's sessions at once, keeping why: the next request of each says it (`ended_reason`).

    An ended session is never live again (`load_session` refuses and deletes it).
    """
    column = {PHYSICIAN: WebSession.physician_id, ASSISTANT: WebSession.assistant_id}.get(role, WebSession.staff_id)
    db_session.execute(update(WebSession).where(WebSession.role == role, column == subject_id)
                       .values(stage=ENDED + reason, pending=None))


def ended_reason(db_session: Session, token: str | None) -> str | None:
    """Why this cookie's session was ended (e.g. "suspended"), once; None if it was not ended so."""
    if not token:
        return None
    web_session = db_session.get(WebSession, _hash(token))
    if web_session is None or not web_session.stage.startswith(ENDED):
        return None
    db_session.delete(web_session)
    return web_session.stage.removeprefix(ENDED)


def destroy_all_for(db_session: Session, role: str, subject_id: int) -> None:
    """Log someone out everywhere (password change, suspension, reset)."""
    column = {PHYSICIAN: WebSession.physician_id, ASSISTANT: WebSession.assistant_id}.get(role, WebSession.staff_id)
    db_session.execute(delete(WebSession).where(WebSession.role == role, column == subject_id))
