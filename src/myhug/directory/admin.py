"""Account administration by the hospital's staff (registration desk and CLI): suspend, reactivate,
reset a password, remove passkeys, replace a mobile number. Each action is audited with who did it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.crypto.passwords import hash_password, readable_password
from myhug.directory.identifiers import normalize_mobile, validate_gln
from myhug.directory.models import Physician
from myhug.directory.service import DirectoryError, find_by_gln
from myhug.websecurity.devices import REVOKED_BY_DESK_RESET, REVOKED_BY_SUSPENSION, revoke_all_devices
from myhug.websecurity.passkeys import remove_all_passkeys
from myhug.websecurity.sessions import PHYSICIAN, destroy_all_for, end_all_for
from myhug.websecurity.throttle import is_locked, lift_lockout


@dataclass(frozen=True)
class AdminResult:
    physician: Physician
    summary: str
    temporary_password: str | None = None


def require_physician(session: Session, gln: str) -> Physician:
    """The physician with this GLN, or a `DirectoryError` saying there is none (in English and in French)."""
    physician = find_by_gln(session, gln)
    if physician is None:
        raise DirectoryError(f"no physician with GLN {gln}", french=f"Aucun médecin avec le GLN {gln}.")
    return physician


def apply(session: Session, action: str, gln: str, *, actor: str, mobile: str | None = None) -> AdminResult:
    physician = require_physician(session, validate_gln(gln))
    if action == "suspend":
        return suspend(session, physician, actor)
    if action == "reactivate":
        return reactivate(session, physician, actor)
    if action == "reset-password":
        return reset_password(session, physician, actor)
    if action == "set-mobile":
        return set_mobile(session, physician, mobile or "", actor)
    if action == "remove-passkeys":
        return remove_passkeys(session, physician, actor)
    raise DirectoryError(f"unknown action {action!r}")


def _end_sessions(session: Session, physician: Physician) -> None:
    destroy_all_for(session, PHYSICIAN, physician.id)


def suspend(session: Session, physician: Physician, actor: str) -> AdminResult:
    if physician.status == "suspended":
        raise DirectoryError(f"physician {physician.gln} is already suspended", french="Ce compte est déjà suspendu.")
    previous = physician.status
    physician.status = "suspended"
    physician.preferences = {**(physician.preferences or {}), "status_before_suspension": previous}
    # Ended, not deleted: the physician's next page says the account was suspended, not that the session idled.
    end_all_for(session, PHYSICIAN, physician.id, "suspended")
    revoke_all_devices(session, physician, REVOKED_BY_SUSPENSION, actor)
    record(session, "suspended", actor=actor, physician_gln=physician.gln, detail={"previous_status": previous})
    return AdminResult(physician, f"suspended: {physician.display_name} ({physician.gln})")


def reactivate(session: Session, physician: Physician, actor: str) -> AdminResult:
    if physician.status != "suspended":
        raise DirectoryError(f"physician {physician.gln} is not suspended", french="Ce compte n’est pas suspendu.")
    prefs = dict(physician.preferences or {})
    physician.status = prefs.pop("status_before_suspension", "registered")
    physician.preferences = prefs
    record(session, "reactivated", actor=actor, physician_gln=physician.gln, detail={"status": physician.status})
    return AdminResult(physician, f"reactivated: {physician.display_name} ({physician.gln}), status {physician.status}")


def reset_password(session: Session, physician: Physician, actor: str) -> AdminResult:
    if physician.channel != "hosted" or not physician.login:
        raise DirectoryError(f"physician {physician.gln} logs in with HIN and has no password",
                             french="Ce médecin se connecte avec son identité HIN, sans mot de passe.")
    temporary = readable_password()
    physician.password_hash = hash_password(temporary)
    physician.password_must_change = True
    _end_sessions(session, physician)
    # A reset is how a lost phone or a stolen password ends: no trusted browser, no passkey survives it.
    revoke_all_devices(session, physician, REVOKED_BY_DESK_RESET, actor)
    remove_all_passkeys(session, physician, "password-reset", actor)
    record(session, "password-reset", actor=actor, physician_gln=physician.gln)
    return AdminResult(physician, f"password reset: {physician.display_name} ({physician.gln}), login {physician.login}",
                       temporary)


def remove_passkeys(session: Session, physician: Physician, actor: str) -> AdminResult:
    """Every passkey of the physician goes (a lost phone or security key); the password and SMS code remain."""
    count = remove_all_passkeys(session, physician, "desk", actor)
    return AdminResult(physician, f"passkeys removed: {physician.display_name} ({physician.gln}), {count}")


def set_mobile(session: Session, physician: Physician, mobile: str, actor: str) -> AdminResult:
    physician.mobile = normalize_mobile(mobile)
    _end_sessions(session, physician)
    record(session, "mobile-changed", actor=actor, physician_gln=physician.gln)
    return AdminResult(physician, f"mobile replaced: {physician.display_name} ({physician.gln}) now ends in {physician.mobile[-2:]}")


def unlock_physician(session: Session, physician: Physician, actor: str) -> bool:
    """Lift the physician's login lockout (CLI and staff desk), audited; True if it was locked."""
    locked = lift_lockout(session, physician_lock_key(physician))
    record(session, "unlocked", actor=actor, physician_gln=physician.gln, detail={"was_locked": locked})
    return locked


def physician_lock_key(physician: Physician) -> str:
    """The throttle key a physician's failed logins count against (the login typed, lower-cased)."""
    return f"login:{(physician.login or physician.gln).lower()}"


def pending_activations(session: Session, limit: int = 100) -> list[Physician]:
    """Physicians registered but not yet activated, the oldest first: the desk follows them up."""
    return list(session.scalars(select(Physician).where(Physician.status == "registered")
                                .order_by(Physician.created_at).limit(limit)))


def is_physician_locked(session: Session, physician: Physician) -> bool:
    """Whether failed logins currently lock this physician out (the desk offers to unlock)."""
    return is_locked(session, physician_lock_key(physician))
