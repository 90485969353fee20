"""Server-side browser sessions: random token in the cookie, its hash in the database."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from myhug.db.base import utcnow
from myhug.webmail.models import WebSession

COOKIE_NAME = "__Host-myhug"
PRE_AUTH_LIFETIME = timedelta(minutes=10)  # between the password and the SMS code

AUTHENTICATED = "authenticated"
SMS_PENDING = "sms"
PASSWORD_CHANGE = "password-change"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta


def create_session(
    db_session: Session, policy: SessionPolicy, *, physician_id: int, stage: str, via: str,
    challenge_id: str | None = None,
) -> str:
    """A new session; returns the cookie token (shown once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    lifetime = policy.absolute if stage == AUTHENTICATED else PRE_AUTH_LIFETIME
    db_session.add(
        WebSession(
            token_hash=_hash(token), physician_id=physician_id, stage=stage, via=via,
            csrf_token=secrets.token_urlsafe(32), challenge_id=challenge_id,
            created_at=now, last_seen_at=now, expires_at=now + lifetime,
        )
    )
    return token


def load_session(db_session: Session, policy: SessionPolicy, token: str | None) -> WebSession | None:
    """The live session for a cookie token, touching its idle timer; expired ones are deleted."""
    if not token:
        return None
    web_session = db_session.get(WebSession, _hash(token))
    if web_session is None:
        return None
    now = utcnow()
    if now >= web_session.expires_at or now - web_session.last_seen_at >= policy.idle:
        db_session.delete(web_session)
        return None
    web_session.last_seen_at = now
    return web_session


def destroy_session(db_session: Session, token: str | None) -> None:
    if token:
        db_session.execute(delete(WebSession).where(WebSession.token_hash == _hash(token)))


def destroy_all_for(db_session: Session, physician_id: int) -> None:
    """Log a physician out everywhere (password change, suspension)."""
    db_session.execute(delete(WebSession).where(WebSession.physician_id == physician_id))
