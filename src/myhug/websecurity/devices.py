"""Trusted devices: "Faire confiance à cet appareil", so that a chosen browser skips the SMS code.

A trusted device replaces the SMS code only: the password is always asked,
and the staff desk never trusts a device. The browser holds a random token
in a `__Host-` cookie; the server keeps its SHA-256, bound to one physician.
Every trust, use and revocation is audited (`device-trusted`, the `login`
event's `via`, `device-revoked`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.db.base import utcnow
from myhug.websecurity.models import TrustedDevice

DEVICE_COOKIE = "__Host-myhug-device"

# Why a device stopped being trusted, as the trail and "Mon profil" say it.
REVOKED_BY_PHYSICIAN = "physician"
REVOKED_BY_PASSWORD_CHANGE = "password-changed"
REVOKED_BY_SUSPENSION = "suspended"
REVOKED_BY_DESK_RESET = "password-reset"

_BROWSERS = (("Edg/", "Edge"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Chromium/", "Chromium"),
             ("Safari/", "Safari"))
_SYSTEMS = (("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"), ("Windows", "Windows"),
            ("Mac OS X", "macOS"), ("Linux", "Linux"))


class Holder(Protocol):
    """Whose devices: a physician (the directory's model), by id and GLN."""

    @property
    def id(self) -> int: ...

    @property
    def gln(self) -> str: ...


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def browser_label(user_agent: str) -> str:
    """What "Mon profil" calls a device: "Chrome sur Windows" (the User-Agent says no more that matters)."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), "Navigateur")
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), "")
    label = f"{browser} sur {system}" if system else browser
    return re.sub(r"[^\w .+-]", "", label)[:100]


def trust_device(session: Session, physician: Holder, user_agent: str, days: int, actor: str) -> str:
    """Trust this browser for `days`; returns the cookie's token (shown once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    device = TrustedDevice(physician_id=physician.id, token_hash=_hash(token), label=browser_label(user_agent),
                           created_at=now, last_used_at=now, expires_at=now + timedelta(days=days))
    session.add(device)
    session.flush()
    record(session, "device-trusted", actor=actor, physician_gln=physician.gln,
           detail={"device": device.id, "label": device.label, "days": days})
    return token


def use_trusted_device(session: Session, physician: Holder, token: str | None) -> TrustedDevice | None:
    """The physician's live trusted device for this cookie, its last use now; None if none is (any more)."""
    if not token:
        return None
    device = session.scalar(select(TrustedDevice).where(TrustedDevice.token_hash == _hash(token)))
    now = utcnow()
    if (device is None or device.physician_id != physician.id or device.revoked_at is not None
            or device.expires_at <= now):
        return None
    device.last_used_at = now
    return device


def trusted_devices(session: Session, physician_id: int) -> list[TrustedDevice]:
    """The physician's devices still trusted, most recently used first."""
    return list(session.scalars(
        select(TrustedDevice).where(TrustedDevice.physician_id == physician_id, TrustedDevice.revoked_at.is_(None),
                                    TrustedDevice.expires_at > utcnow())
        .order_by(TrustedDevice.last_used_at.desc())
    ))


def revoke_device(session: Session, physician: Holder, device_id: int, actor: str) -> bool:
    """The physician stops trusting one of their devices; False if it is not theirs or not trusted."""
    device = session.get(TrustedDevice, device_id)
    if device is None or device.physician_id != physician.id or device.revoked_at is not None:
        return False
    device.revoked_at, device.revoked_reason = utcnow(), REVOKED_BY_PHYSICIAN
    record(session, "device-revoked", actor=actor, physician_gln=physician.gln,
           detail={"device": device.id, "reason": REVOKED_BY_PHYSICIAN})
    return True


def revoke_all_devices(session: Session, physician: Holder, reason: str, actor: str) -> int:
    """No device of the physician is trusted any more (password change, suspension, desk reset)."""
    result = session.execute(
        update(TrustedDevice).where(TrustedDevice.physician_id == physician.id, TrustedDevice.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason).execution_options(synchronize_session=False)
    )
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        record(session, "device-revoked", actor=actor, physician_gln=physician.gln,
               detail={"devices": count, "reason": reason})
    return count
