"""Staff accounts (password + TOTP), their sessions, and the SMS check of a physician's mobile."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.crypto.passwords import hash_password, new_secret, verify_password
from myhug.crypto.sealing import Sealer
from myhug.db.base import utcnow
from myhug.directory.service import DirectoryError
from myhug.staffdesk.models import StaffMember, StaffSession
from myhug.webmail.auth import LOCKED, LoginRefused, is_locked, lift_lockout, register_failure

STAFF_SESSION_IDLE = timedelta(minutes=15)
STAFF_SESSION_ABSOLUTE = timedelta(hours=10)
VERIFY_LIFETIME = timedelta(minutes=10)
VERIFY_ATTEMPTS = 5
STAFF_COOKIE = "__Host-myhug-staff"


@dataclass(frozen=True)
class NewStaff:
    login: str
    password: str
    totp_secret: str
    provisioning_uri: str


def add_staff(session: Session, sealer: Sealer, login: str, display_name: str, actor: str = "cli") -> NewStaff:
    login = login.strip().lower()
    if not login or not login.replace(".", "").replace("-", "").isalnum():
        raise DirectoryError(f"invalid staff login {login!r}")
    if session.scalar(select(StaffMember).where(StaffMember.login == login)):
        raise DirectoryError(f"staff member {login!r} already exists")
    password, secret = new_secret(15), pyotp.random_base32()
    session.add(StaffMember(login=login, display_name=display_name.strip() or login,
                            password_hash=hash_password(password), totp_blob_id=sealer.seal(session, secret.encode()).id,
                            last_totp_counter=0, active=True, created_at=utcnow()))
    record(session, "registered", actor=actor, detail={"staff": login})
    uri = pyotp.TOTP(secret).provisioning_uri(name=login, issuer_name="myHUG desk")
    return NewStaff(login, password, secret, uri)


def staff_login(session: Session, sealer: Sealer, login: str, password: str, code: str, ip: str) -> StaffMember:
    """Password and TOTP code; the same refusal for any wrong part; a code is accepted only once."""
    login = login.strip().lower()
    key = f"staff:{login}"
    if is_locked(session, f"login:{key}", f"ip:{ip}"):
        raise LoginRefused(LOCKED)
    staff = session.scalar(select(StaffMember).where(StaffMember.login == login))
    ok = verify_password(staff.password_hash if staff else None, password)
    counter = 0
    reused = False
    if ok and staff is not None and staff.active:
        totp = pyotp.TOTP(sealer.open_id(session, staff.totp_blob_id).decode())
        now = utcnow()
        for offset in (0, -1, 1):  # one 30-second step of clock drift either way
            step = int(now.timestamp()) // totp.interval + offset
            if hmac.compare_digest(totp.generate_otp(step), code.strip()):
                counter, reused = (step, False) if step > staff.last_totp_counter else (0, True)
                break
    if reused:
        # The right password and a right code, already used: a second click or a replay, not a guess.
        # Refused (a code works once), but not counted towards the lockout.
        record(session, "staff-login-failed", actor=f"web:{ip}", outcome="failure",
               detail={"staff": login, "reason": "code already used"})
        raise LoginRefused("Ce code a déjà été utilisé. Attendez le code suivant de votre application et réessayez.")
    if not counter or staff is None:
        register_failure(session, key, ip)
        record(session, "staff-login-failed", actor=f"web:{ip}", outcome="failure", detail={"staff": login})
        raise LoginRefused("Identifiant, mot de passe ou code incorrect.")
    staff.last_totp_counter = counter
    record(session, "staff-login", actor=f"staff:{staff.login}", detail={"ip": ip})
    return staff


def unlock_staff(session: Session, login: str, actor: str = "cli") -> bool:
    """`myhug staff unlock LOGIN`: lift a staff member's login lockout, audited; True if it was locked."""
    login = login.strip().lower()
    if session.scalar(select(StaffMember).where(StaffMember.login == login)) is None:
        raise DirectoryError(f"no staff member {login!r}")
    locked = lift_lockout(session, f"login:staff:{login}")
    record(session, "unlocked", actor=actor, detail={"staff": login, "was_locked": locked})
    return locked


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_staff_session(session: Session, staff_id: int) -> str:
    token, now = secrets.token_urlsafe(32), utcnow()
    session.add(StaffSession(token_hash=_hash(token), staff_id=staff_id, csrf_token=secrets.token_urlsafe(32),
                             pending=None, created_at=now, last_seen_at=now, expires_at=now + STAFF_SESSION_ABSOLUTE))
    return token


def load_staff_session(session: Session, token: str | None) -> tuple[StaffSession, StaffMember] | None:
    if not token:
        return None
    row = session.get(StaffSession, _hash(token))
    if row is None:
        return None
    now = utcnow()
    staff = session.get(StaffMember, row.staff_id)
    if now >= row.expires_at or now - row.last_seen_at >= STAFF_SESSION_IDLE or staff is None or not staff.active:
        session.delete(row)
        return None
    row.last_seen_at = now
    return row, staff


def end_staff_session(session: Session, token: str | None) -> None:
    if token:
        row = session.get(StaffSession, _hash(token))
        if row is not None:
            session.delete(row)


def start_verification(staff_session: StaffSession, kind: str, data: dict[str, Any]) -> str:
    """Keep `data` pending until the code sent to the mobile comes back; returns the code to send."""
    code = f"{secrets.randbelow(1_000_000):06d}"
    salt = secrets.token_hex(8)
    staff_session.pending = {
        "kind": kind, "data": data, "salt": salt, "attempts": 0,
        "code_hash": hashlib.sha256(f"{salt}:{code}".encode()).hexdigest(),
        "expires_at": (utcnow() + VERIFY_LIFETIME).isoformat(),
    }
    return code


def check_verification(staff_session: StaffSession, code: str) -> tuple[str, dict[str, Any]]:
    """The pending (kind, data) if `code` is right; raises LoginRefused otherwise (5 tries, 10 minutes)."""
    from datetime import datetime

    pending = dict(staff_session.pending or {})
    if not pending:
        raise LoginRefused("Aucune vérification en cours.")
    if datetime.fromisoformat(pending["expires_at"]) <= utcnow() or pending["attempts"] >= VERIFY_ATTEMPTS:
        staff_session.pending = None
        raise LoginRefused("Le code a expiré ; recommencez.")
    pending["attempts"] += 1
    expected = hashlib.sha256(f"{pending['salt']}:{code.strip()}".encode()).hexdigest()
    if not hmac.compare_digest(expected, pending["code_hash"]):
        staff_session.pending = pending
        raise LoginRefused(f"Code incorrect ({VERIFY_ATTEMPTS - pending['attempts']} essai(s) restant(s)).")
    staff_session.pending = None
    return pending["kind"], pending["data"]
