"""Login throttling per key (`login:<name>`, `login:staff:<name>`, `ip:<address>`): failures within a
window, then a lock. Every step of a login, physician's or staff's, checks it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from myhug.db.base import utcnow
from myhug.websecurity.models import LoginThrottle

THROTTLE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
MAX_FAILURES_PER_LOGIN = 5
MAX_FAILURES_PER_IP = 20

LOCKED = "Trop de tentatives infructueuses. Réessayez dans 15 minutes."


def _throttle(db_session: Session, key: str) -> LoginThrottle:
    row = db_session.get(LoginThrottle, key, with_for_update=True)
    now = utcnow()
    if row is None:
        row = LoginThrottle(key=key, failures=0, window_start=now, locked_until=None)
        db_session.add(row)
    elif now - row.window_start > THROTTLE_WINDOW and (row.locked_until is None or row.locked_until <= now):
        row.failures, row.window_start, row.locked_until = 0, now, None
    return row


def is_locked(db_session: Session, *keys: str) -> bool:
    now = utcnow()
    for key in keys:
        row = db_session.get(LoginThrottle, key)
        if row is not None and row.locked_until is not None and row.locked_until > now:
            return True
    return False


def register_failure(db_session: Session, login: str, ip: str) -> None:
    for key, limit in ((f"login:{login.lower()}", MAX_FAILURES_PER_LOGIN), (f"ip:{ip}", MAX_FAILURES_PER_IP)):
        row = _throttle(db_session, key)
        row.failures += 1
        if row.failures >= limit:
            row.locked_until = utcnow() + LOCKOUT


def lift_lockout(db_session: Session, key: str) -> bool:
    """Forget the failures of one login key (`login:<name>`); True if it was locked."""
    row = db_session.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        return False
    locked = row.locked_until is not None and row.locked_until > utcnow()
    db_session.delete(row)
    db_session.flush()  # a later `is_locked` in this transaction must not find the row in the identity map
    return locked


def clear_failures(db_session: Session, login: str) -> None:
    row = db_session.get(LoginThrottle, f"login:{login.lower()}")
    if row is not None:
        db_session.delete(row)
