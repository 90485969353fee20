"""Staff accounts (password + TOTP), their sessions, and the SMS check of a physician's mobile."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.blobs.store import Sealer
from myhug.crypto.passwords import hash_password, new_secret, verify_password
from myhug.db.base import utcnow
from myhug.directory.service import DirectoryError
from myhug.staffdesk.models import StaffMember
from myhug.websecurity.codes import code_hash, code_matches, new_code
from myhug.websecurity.forms import LoginRefused
from myhug.websecurity.models import WebSession
from myhug.websecurity.sessions import STAFF, SessionPolicy, load_session
from myhug.websecurity.throttle import LOCKED, is_locked, lift_lockout, register_failure

VERIFY_LIFETIME = timedelta(minutes=10)
VERIFY_ATTEMPTS = 5
STAFF_POLICY = SessionPolicy(cookie="__Host-myhug-staff", idle=timedelta(minutes=15), absolute=timedelta(hours=10))


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


def load_staff_session(session: Session, token: str | None) -> tuple[WebSession, StaffMember] | None:
    """The live staff session of a cookie token and its (active) staff member."""
    row = load_session(session, STAFF_POLICY, token, STAFF)
    if row is None:
        return None
    staff = session.get(StaffMember, row.staff_id or 0)
    if staff is None or not staff.active:
        session.delete(row)
        return None
    return row, staff


def start_verification(staff_session: WebSession, kind: str, data: dict[str, Any]) -> str:
    """Keep `data` pending until the code sent to the mobile comes back; returns the code to send."""
    code = new_code()
    salt = secrets.token_hex(8)
    staff_session.pending = {
        "kind": kind, "data": data, "salt": salt, "attempts": 0,
        "code_hash": code_hash(salt, code),
        "expires_at": (utcnow() + VERIFY_LIFETIME).isoformat(),
    }
    return code


def resend_verification(staff_session: WebSession) -> tuple[str, str]:
    """A new code for the pending check (the first did not arrive): (mobile, code); the old code stops working."""
    pending = dict(staff_session.pending or {})
    if not pending:
        raise LoginRefused("Aucune vérification en cours.")
    return pending["data"]["mobile"], start_verification(staff_session, pending["kind"], pending["data"])


def cancel_verification(staff_session: WebSession) -> None:
    """Drop the pending check: nothing is registered or changed."""
    staff_session.pending = None


def check_verification(staff_session: WebSession, code: str) -> tuple[str, dict[str, Any]]:
    """The pending (kind, data) if `code` is right; raises LoginRefused otherwise (5 tries, 10 minutes)."""
    pending = dict(staff_session.pending or {})
    if not pending:
        raise LoginRefused("Aucune vérification en cours.")
    if datetime.fromisoformat(pending["expires_at"]) <= utcnow() or pending["attempts"] >= VERIFY_ATTEMPTS:
        staff_session.pending = None
        raise LoginRefused("Le code a expiré ; recommencez.")
    pending["attempts"] += 1
    if not code_matches(pending["code_hash"], pending["salt"], code):
        staff_session.pending = pending
        raise LoginRefused(f"Code incorrect ({VERIFY_ATTEMPTS - pending['attempts']} essai(s) restant(s)).")
    staff_session.pending = None
    return pending["kind"], pending["data"]
