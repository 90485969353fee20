"""Login rules of the webmail: password + SMS code, HIN identity, throttling and lockout.

All messages meant for the physician are in French. An unknown login and a
wrong password get the same answer and cost the same time.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from myhug.audit.models import AuditEvent
from myhug.audit.trail import record
from myhug.crypto.passwords import verify_password
from myhug.db.base import utcnow
from myhug.directory.models import Assistant, Physician
from myhug.websecurity.codes import code_hash, code_matches, new_code
from myhug.websecurity.forms import LoginRefused
from myhug.websecurity.models import LoginChallenge
from myhug.websecurity.pages import SUPPORT_SENTENCE
from myhug.websecurity.throttle import (
    LOCKED,
    clear_failures,
    is_locked,
    register_failure,
)

CODE_LIFETIME = timedelta(minutes=5)
CODE_TTL_MINUTES = int(CODE_LIFETIME.total_seconds() // 60)  # said on the page and in the SMS
MAX_CODE_ATTEMPTS = 5
RESEND_COOLDOWN = timedelta(seconds=30)
MAX_SENDS = 3
SMS_WINDOW = timedelta(hours=1)

BAD_CREDENTIALS = "Identifiant ou mot de passe incorrect."
# Said only after the right password: a guesser learns nothing about the account from it.
SUSPENDED = ("Votre compte myHUG est suspendu : la connexion n’est pas possible. Le service de cybersanté des HUG "
             "peut le réactiver après vérification. " + SUPPORT_SENTENCE)
BAD_CODE = "Code incorrect."
CODE_SHAPE = "Le code a 6 chiffres : saisissez les 6 chiffres reçus par SMS, sans lettre ni espace."
CODE_EXPIRED = "Ce code n’est plus valable. Veuillez vous reconnecter."


# Who logs in with a password and an SMS code: a physician, or a practice assistant (one login form for both).
Account = Physician | Assistant


@dataclass(frozen=True)
class SmsChallenge:
    challenge_id: str
    account: Account
    mobile: str
    code: str


def _owner(challenge: LoginChallenge | type[LoginChallenge], account: Account) -> Any:
    """The challenge's column naming this account (its physician or its assistant)."""
    if isinstance(account, Assistant):
        return challenge.assistant_id == account.id
    return challenge.physician_id == account.id


def _who(account: Account) -> dict[str, str]:
    """What the trail says of an account besides the GLN: an assistant by login."""
    return {"assistant": account.login} if isinstance(account, Assistant) else {}


def _local_time(moment: datetime) -> str:
    try:
        from zoneinfo import ZoneInfo

        return moment.astimezone(ZoneInfo("Europe/Zurich")).strftime("%H:%M")
    except (ImportError, KeyError, OSError):  # no time zone database: the server's local time
        return moment.astimezone().strftime("%H:%M")


def sms_text(code: str) -> str:
    return (f"myHUG : votre code de connexion est {code}. Il est valable {CODE_TTL_MINUTES} minutes. "
            "Ne le communiquez à personne.")


def _check_not_locked(db_session: Session, login: str, ip: str) -> None:
    """Every step of a login checks the lock: a challenge opened before it does not get around it."""
    if is_locked(db_session, f"login:{login.lower()}", f"ip:{ip}"):
        raise LoginRefused(f"{LOCKED} {SUPPORT_SENTENCE}")


def spend_sms_code(db_session: Session, physician: Account, ip: str, per_hour: int) -> None:
    """Count one more login code for this physician's phone, or refuse past `per_hour` in a rolling hour.

    Codes are counted from the challenges' sends; a challenge counts in full
    while its last send is in the window, so the count never falls short.
    The refusal says when a code can be sent again, and is audited.
    """
    now = utcnow()
    since = now - SMS_WINDOW
    sent, oldest = db_session.execute(
        select(func.coalesce(func.sum(LoginChallenge.sends), 0), func.min(LoginChallenge.last_sent_at))
        .where(_owner(LoginChallenge, physician), LoginChallenge.last_sent_at > since)
    ).one()
    if int(sent) >= per_hour:
        retry_at = (oldest or now) + SMS_WINDOW
        record(db_session, "sms-capped", actor=f"web:{ip}", outcome="refused", physician_gln=physician.gln,
               detail={"codes_last_hour": int(sent), "cap": per_hour, **_who(physician)})
        raise LoginRefused(f"Trop de codes SMS ont été envoyés pour ce compte. "
                           f"Réessayez après {_local_time(retry_at)}. {SUPPORT_SENTENCE}")


# --- password step ------------------------------------------------------------------


def check_password(db_session: Session, login: str, password: str, ip: str) -> Account:
    """Step 1 of an SMS login: the password, of a physician or of an assistant.

    Raises `LoginRefused` with the same message for an unknown login and a
    wrong password; a suspended account is named as such only after the right
    password (a guesser learns nothing), with the support contact; a locked
    login or address says so.
    """
    login = login.strip().lower()
    _check_not_locked(db_session, login, ip)
    account: Account | None = None
    if login:
        account = db_session.scalar(select(Physician).where(Physician.login == login)) \
            or db_session.scalar(select(Assistant).where(Assistant.login == login))
    ok = verify_password(account.password_hash if account else None, password)
    if ok and account is not None and account.status == "suspended":
        record(db_session, "login-failed", actor=f"web:{ip}", outcome="failure", physician_gln=account.gln,
               detail={"step": "password", "reason": "suspended", **_who(account)})
        raise LoginRefused(SUSPENDED)
    if not ok or account is None or not account.mobile:
        register_failure(db_session, login, ip)
        record(db_session, "login-failed", actor=f"web:{ip}", outcome="failure",
               physician_gln=account.gln if account else None,
               detail={"step": "password", **(_who(account) if account else {})})
        raise LoginRefused(BAD_CREDENTIALS)
    return account


def open_challenge(db_session: Session, physician: Account, ip: str, sms_per_hour: int) -> SmsChallenge:
    """Step 1, continued: a fresh code bound to this attempt (refused past `sms_per_hour` codes in the hour)."""
    assert physician.mobile
    spend_sms_code(db_session, physician, ip, sms_per_hour)
    challenge_id = secrets.token_hex(16)
    code = new_code()
    now = utcnow()
    assistant = isinstance(physician, Assistant)
    db_session.add(
        LoginChallenge(
            id=challenge_id, physician_id=None if assistant else physician.id,
            assistant_id=physician.id if assistant else None, code_hash=code_hash(challenge_id, code),
            expires_at=now + CODE_LIFETIME, attempts=0, sends=1, last_sent_at=now,
        )
    )
    return SmsChallenge(challenge_id, physician, physician.mobile, code)


def check_password_and_challenge(db_session: Session, login: str, password: str, ip: str,
                                 sms_per_hour: int) -> SmsChallenge:
    """The password, then a code: `check_password` and `open_challenge`."""
    return open_challenge(db_session, check_password(db_session, login, password, ip), ip, sms_per_hour)


def trusted_login(db_session: Session, physician: Account) -> None:
    """The password was right on a trusted device: the SMS step is skipped, as a right code would end it."""
    clear_failures(db_session, physician.login or "")


def challenge_account(db_session: Session, challenge: LoginChallenge) -> Account:
    """The physician or the assistant a code was sent to."""
    account: Account | None = (db_session.get(Assistant, challenge.assistant_id) if challenge.assistant_id
                               else db_session.get(Physician, challenge.physician_id))
    assert account is not None
    return account


def verify_code(db_session: Session, challenge_id: str, code: str, ip: str) -> Account:
    """Step 2: the SMS code. Valid 5 minutes, used once, at most 5 tries."""
    challenge = db_session.get(LoginChallenge, challenge_id, with_for_update=True)
    if challenge is None or challenge.used_at is not None:
        raise LoginRefused(CODE_EXPIRED)
    physician = challenge_account(db_session, challenge)
    now = utcnow()
    if challenge.expires_at <= now or challenge.attempts >= MAX_CODE_ATTEMPTS:
        raise LoginRefused(CODE_EXPIRED)
    # The failures count per account across all its challenges: a locked account takes no code at all.
    _check_not_locked(db_session, physician.login or "", ip)
    if not re.fullmatch(r"\d{6}", code.strip()):
        # A typo ("12ab", five digits), not a guess: said as such, and not counted against the five tries.
        raise LoginRefused(CODE_SHAPE)
    challenge.attempts += 1
    if not code_matches(challenge.code_hash, challenge.id, code.strip()):
        register_failure(db_session, physician.login or "", ip)
        record(db_session, "login-failed", actor=f"web:{ip}", outcome="failure",
               physician_gln=physician.gln, detail={"step": "sms-code", "attempt": challenge.attempts,
                                                    **_who(physician)})
        if challenge.attempts >= MAX_CODE_ATTEMPTS:
            raise LoginRefused(CODE_EXPIRED)
        raise LoginRefused(f"{BAD_CODE} Il vous reste {MAX_CODE_ATTEMPTS - challenge.attempts} essai(s).")
    challenge.used_at = now
    clear_failures(db_session, physician.login or "")
    return physician


def new_code_for_resend(db_session: Session, challenge_id: str, ip: str, sms_per_hour: int) -> tuple[str, str]:
    """A new code for the same attempt, after a cooldown; the failure count is kept.

    Returns (mobile, code). Raises `LoginRefused` if locked, too early, or too many sends.
    """
    challenge = db_session.get(LoginChallenge, challenge_id, with_for_update=True)
    if challenge is None or challenge.used_at is not None or challenge.attempts >= MAX_CODE_ATTEMPTS:
        raise LoginRefused(CODE_EXPIRED)
    physician = challenge_account(db_session, challenge)
    assert physician.mobile
    _check_not_locked(db_session, physician.login or "", ip)
    now = utcnow()
    if now - challenge.last_sent_at < RESEND_COOLDOWN:
        wait = int((RESEND_COOLDOWN - (now - challenge.last_sent_at)).total_seconds()) + 1
        raise LoginRefused(f"Veuillez patienter {wait} secondes avant de demander un nouveau code.")
    if challenge.sends >= MAX_SENDS:
        raise LoginRefused("Nombre maximal d’envois atteint. Veuillez vous reconnecter.")
    spend_sms_code(db_session, physician, ip, sms_per_hour)
    code = new_code()
    challenge.code_hash = code_hash(challenge.id, code)
    challenge.sends += 1
    challenge.last_sent_at = now
    challenge.expires_at = now + CODE_LIFETIME
    return physician.mobile, code


# --- HIN identity ---------------------------------------------------------------------


def previous_login(session: Session, gln: str) -> datetime | None:
    """When this physician logged in before the current login (the trail is the record), if ever."""
    moments = session.scalars(
        select(AuditEvent.occurred_at).where(AuditEvent.event == "login", AuditEvent.physician_gln == gln)
        .order_by(AuditEvent.seq.desc()).limit(2)
    ).all()
    return moments[1] if len(moments) > 1 else None
