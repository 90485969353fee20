"""Directory operations: registration, activation, recipient resolution, consents, DPI clients.

Every operation runs in the caller's transaction and records its audit event
there, so the directory and the trail never disagree.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, lazyload

from myhug.audit.trail import record
from myhug.crypto.passwords import (
    hash_password,
    new_secret,
    readable_password,
    token_hash,
    verify_password,
)
from myhug.db.base import utcnow
from myhug.directory.identifiers import (
    InvalidIdentifier,
    normalize_address,
    normalize_mobile,
    validate_gln,
)
from myhug.directory.models import (
    Assistant,
    Consent,
    ConsentHistory,
    DpiClient,
    Physician,
    PhysicianSpecialty,
)
from myhug.directory.password_policy import check_password
from myhug.directory.search import fold, search_key
from myhug.directory.specialties import validate_specialty
from myhug.errors import PermanentFailure


class DirectoryError(PermanentFailure):
    """A directory operation that cannot succeed with this input."""


class UnknownRecipient(DirectoryError):
    pass


class NotActivated(DirectoryError):
    pass


class AlreadyExists(DirectoryError):
    pass


class AccountSuspended(DirectoryError):
    """The account is suspended: no login, whatever the means, until the staff desk reactivates it."""


class HinLinkRequired(DirectoryError):
    """The GLN belongs to an account registered another way (SMS mode): linking it is a deliberate step."""


class HinIdentityMismatch(DirectoryError):
    """The HIN identity names another HIN address than the one registered for this GLN."""


@dataclass(frozen=True)
class Registration:
    physician: Physician
    temporary_password: str | None


@dataclass(frozen=True)
class HinIdentity:
    """What the HIN access gateway tells about the person behind a request."""

    login_name: str
    gln: str
    mail: str
    given_name: str
    surname: str


def _ascii_slug(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return re.sub(r"[^a-z0-9]+", "", decomposed.encode("ascii", "ignore").decode().lower())


def new_login(session: Session, given_name: str, family_name: str, fallback: str = "medecin") -> str:
    """A login unique among physicians' and assistants' ("favre.e", "favre.e2"…): one login form serves both."""
    base = (_ascii_slug(family_name) or fallback)[:20]
    if given_name:
        base = f"{base}.{_ascii_slug(given_name)[:1]}".rstrip(".")
    candidate, n = base, 1
    while (session.scalar(select(func.count()).select_from(Physician).where(Physician.login == candidate))
           or session.scalar(select(func.count()).select_from(Assistant).where(Assistant.login == candidate))):
        n += 1
        candidate = f"{base}{n}"
    return candidate


def find_by_gln(session: Session, gln: str) -> Physician | None:
    return session.scalar(select(Physician).where(Physician.gln == gln))


def register_physician(
    session: Session,
    *,
    gln: str,
    family_name: str,
    given_name: str = "",
    hin_address: str | None = None,
    mobile: str | None = None,
    email: str | None = None,
    specialties: Iterable[str] = (),
    actor: str,
    audit_detail: dict[str, object] | None = None,
) -> Registration:
    """Create a physician in state `registered`.

    SMS mode (`mobile`) gets a login and a temporary password, returned once
    and stored only as a hash. HIN mode (`hin_address`) is a pre-registration
    that the first HIN login completes.
    """
    gln = validate_gln(gln)
    if bool(hin_address) == bool(mobile):
        raise DirectoryError("give exactly one of an HIN address or a mobile number")
    if not family_name.strip():
        raise DirectoryError("a family name is required")
    if find_by_gln(session, gln) is not None:
        raise AlreadyExists(f"a physician with GLN {gln} is already registered")
    codes = sorted({validate_specialty(code) for code in specialties})
    physician = Physician(
        gln=gln,
        given_name=given_name.strip(),
        family_name=family_name.strip(),
        email=normalize_address(email) if email else None,
        status="registered",
        # Notify at each document when there is an address to notify; the physician changes it in "Mon profil".
        notification_mode="each" if email else "none",
        preferences={},
        created_at=utcnow(),
        specialties=[PhysicianSpecialty(code=code) for code in codes],
    )
    temporary_password = None
    if hin_address:
        address = normalize_address(hin_address)
        if session.scalar(select(Physician).where(Physician.hin_address == address)):
            raise AlreadyExists(f"the HIN address {address} is already registered")
        physician.channel = "hin"
        physician.hin_address = address
    else:
        assert mobile is not None
        physician.channel = "hosted"
        physician.mobile = normalize_mobile(mobile)
        physician.login = new_login(session, physician.given_name, physician.family_name)
        temporary_password = readable_password()
        physician.password_hash = hash_password(temporary_password)
        physician.password_must_change = True
    physician.search_name = search_key(physician.given_name, physician.family_name)
    session.add(physician)
    session.flush()
    record(session, "registered", actor=actor, physician_gln=gln,
           detail={"channel": physician.channel, **(audit_detail or {})})
    return Registration(physician, temporary_password)


def _activate(session: Session, physician: Physician, actor: str, how: str) -> None:
    if physician.status == "suspended":
        raise AccountSuspended(f"physician {physician.gln} is suspended")
    if physician.status != "activated":
        physician.status = "activated"
        physician.activated_at = utcnow()
        record(session, "activated", actor=actor, physician_gln=physician.gln, detail={"how": how})


def activate_with_password(session: Session, physician: Physician, temporary_password: str, new_password: str) -> None:
    """Activation of an SMS-mode account: the temporary password is replaced by the physician's own.

    The webmail calls this after the SMS code is verified; so do tests and the demo.
    """
    if physician.channel != "hosted":
        raise DirectoryError("only SMS-mode accounts are activated by a password change")
    if not verify_password(physician.password_hash, temporary_password):
        raise DirectoryError("the current password is wrong")
    check_password(new_password, physician.login)
    physician.password_hash = hash_password(new_password)
    physician.password_must_change = False
    _activate(session, physician, actor=f"physician:{physician.gln}", how="password-change")


def activate_hin_identity(session: Session, identity: HinIdentity, actor: str | None = None) -> Physician:
    """HIN login: find the physician by GLN (pre-registered) or create one, then activate.

    A login never changes an existing physician's route or delivery address by
    itself: an account registered in SMS mode raises `HinLinkRequired`
    (see `link_hin_identity`), and another HIN address than the registered one
    raises `HinIdentityMismatch`.
    """
    gln = validate_gln(identity.gln)
    address = normalize_address(identity.mail)
    physician = find_by_gln(session, gln)
    if physician is None:
        physician = Physician(
            gln=gln,
            given_name=identity.given_name.strip(),
            family_name=identity.surname.strip() or identity.login_name,
            channel="hin",
            hin_address=address,
            email=address,
            status="registered",
            notification_mode="each",
            preferences={},
            created_at=utcnow(),
            specialties=[],
        )
        physician.search_name = search_key(physician.given_name, physician.family_name)
        session.add(physician)
        session.flush()
        record(session, "registered", actor=actor or f"hin:{identity.login_name}", physician_gln=gln,
               detail={"channel": "hin", "hin_login": identity.login_name})
    elif physician.hin_address is None:
        raise HinLinkRequired(f"physician {gln} is registered without an HIN identity; linking it is a separate step")
    elif physician.hin_address != address:
        raise HinIdentityMismatch(f"physician {gln} is registered with another HIN address")
    _activate(session, physician, actor=actor or f"hin:{identity.login_name}", how="hin-login")
    return physician


def link_hin_identity(session: Session, physician: Physician, identity: HinIdentity, actor: str) -> None:
    """Link an HIN identity to an account registered in SMS mode: from now on documents take the HIN route.

    Only called after the physician proved the account (password and SMS code)
    or by the staff desk; audited. The caller tells the physician by SMS.
    """
    if validate_gln(identity.gln) != physician.gln:
        raise HinIdentityMismatch("the HIN identity carries another GLN than this account")
    address = normalize_address(identity.mail)
    other = session.scalar(select(Physician).where(Physician.hin_address == address, Physician.id != physician.id))
    if other is not None:
        raise AlreadyExists(f"the HIN address {address} belongs to another physician")
    previous = physician.channel
    physician.hin_address = address
    physician.channel = "hin"
    record(session, "hin-linked", actor=actor, physician_gln=physician.gln,
           detail={"hin_login": identity.login_name, "previous_channel": previous})


def find_physicians(session: Session, query: str, limit: int = 50) -> list[Physician]:
    """The registration desk's search: every physician (whatever the status) by GLN or by name words."""
    stmt = select(Physician)
    if query.isdigit():
        stmt = stmt.where(Physician.gln == query)
    else:
        for word in fold(query).split():
            stmt = stmt.where(Physician.search_name.contains(f" {word}"))
    return list(session.scalars(stmt.order_by(Physician.search_name).limit(limit)))


def hosted_address(physician: Physician, mail_domain: str) -> str | None:
    return f"{physician.login}@{mail_domain}" if physician.login else None


def delivery_address(physician: Physician, mail_domain: str) -> str:
    """Where the physician's documents go: the HIN address, else the hosted mailbox, else the GLN alias."""
    return physician.hin_address or hosted_address(physician, mail_domain) or f"{physician.gln}@{mail_domain}"


def resolve_recipient(session: Session, address: str, mail_domain: str) -> Physician:
    """The physician behind a RCPT TO address: HIN address, `<login>@domain` or `<GLN>@domain`."""
    try:
        address = normalize_address(address)
    except InvalidIdentifier as exc:
        raise UnknownRecipient(str(exc)) from None
    local, _, domain = address.rpartition("@")
    # One statement for the address's possible readings (a hosted address was two, a miss on the HIN address
    # first); a HIN address match comes first. Routing needs the physician's row, not the specialties.
    readings = [Physician.hin_address == address]
    if domain == mail_domain.lower():
        readings.append(Physician.gln == local if re.fullmatch(r"\d{13}", local) else Physician.login == local)
    found = session.scalars(select(Physician).options(lazyload(Physician.specialties)).where(or_(*readings))).all()
    physician = next((p for p in found if p.hin_address == address), found[0] if found else None)
    if physician is None:
        raise UnknownRecipient(f"no physician at {address}")
    return physician


def require_activated(physician: Physician) -> None:
    if physician.status != "activated":
        reason = "suspended" if physician.status == "suspended" else "has not activated the myHUG account"
        raise NotActivated(f"recipient {physician.gln} {reason}")


# --- consents --------------------------------------------------------------


def set_consent(session: Session, patient_ref: str, physician: Physician, *, granted: bool, actor: str) -> None:
    """Record (granted=True) or revoke designation + authorization; the history keeps both."""
    consent = session.scalar(
        select(Consent).where(Consent.patient_ref == patient_ref, Consent.physician_id == physician.id)
    )
    now = utcnow()
    if consent is None:
        consent = Consent(patient_ref=patient_ref, physician_id=physician.id)
        session.add(consent)
    consent.designated = granted
    consent.electronic_sending_authorized = granted
    consent.updated_at = now
    consent.updated_by = actor
    session.add(
        ConsentHistory(
            patient_ref=patient_ref,
            physician_id=physician.id,
            action="grant" if granted else "revoke",
            designated=granted,
            electronic_sending_authorized=granted,
            at=now,
            by=actor,
        )
    )
    # The patient is named in the trail only by the blind index's first bytes.
    record(
        session,
        "consent-granted" if granted else "consent-revoked",
        actor=actor,
        physician_gln=physician.gln,
        detail={"patient_ref": patient_ref[:16]},
    )


def consent_given(designated: bool | None, electronic_sending_authorized: bool | None) -> bool:
    """The rule, for a consent row's two columns (None: no row): designated *and* authorized."""
    return bool(designated and electronic_sending_authorized)


def has_consent(session: Session, patient_ref: str, physician_id: int) -> bool:
    """True if the patient designated the physician and authorized electronic sending."""
    row = session.execute(
        select(Consent.designated, Consent.electronic_sending_authorized)
        .where(Consent.patient_ref == patient_ref, Consent.physician_id == physician_id)
    ).one_or_none()
    return consent_given(*row) if row is not None else False


# --- DPI clients -----------------------------------------------------------


@dataclass(frozen=True)
class DpiCredentials:
    username: str
    password: str
    api_token: str


def add_dpi_client(session: Session, name: str, actor: str = "cli", *, all_events: bool = False) -> DpiCredentials:
    """Create a DPI client; the secrets are returned once and stored hashed.

    Its audit feed (`GET /api/v1/audit`) holds the events of its own
    submissions and its own acts; `all_events` makes a client that reads
    every event, such as the hospital's audit repository.
    """
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise DirectoryError(f"invalid client name {name!r}: letters, digits, '.', '_' and '-' only")
    if session.scalar(select(DpiClient).where(DpiClient.name == name)):
        raise AlreadyExists(f"a DPI client named {name!r} already exists")
    credentials = DpiCredentials(username=name.lower(), password=new_secret(18), api_token=new_secret(32))
    session.add(
        DpiClient(
            name=name,
            username=credentials.username,
            password_hash=hash_password(credentials.password),
            api_token_hash=token_hash(credentials.api_token),
            active=True,
            all_events=all_events,
            created_at=utcnow(),
        )
    )
    session.flush()
    return credentials


def authenticate_dpi_client(session: Session, username: str, password: str) -> DpiClient | None:
    """The active client with these SMTP credentials, or None (same cost either way)."""
    client = session.scalar(select(DpiClient).where(DpiClient.username == username.lower()))
    ok = verify_password(client.password_hash if client else None, password)
    return client if ok and client is not None and client.active else None


# --- directory search (the DPI picks the recipient) ----------------------------------


@dataclass(frozen=True)
class SearchPage:
    physicians: list[Physician]
    next_cursor: str | None


def search_physicians(
    session: Session, *, name: str | None = None, specialty: str | None = None, gln: str | None = None,
    limit: int = 20, cursor: str | None = None,
) -> SearchPage:
    """Activated physicians matching every given criterion, ordered by name.

    Keyset pagination on (search name, id): a page boundary is a position in
    that order, not an offset, so physicians added or removed meanwhile do not
    shift or repeat the following pages.
    """
    stmt = select(Physician).where(Physician.status == "activated")
    if name:
        words = fold(name).split()
        for word in words:
            stmt = stmt.where(Physician.search_name.contains(f" {word}"))
    if specialty:
        stmt = stmt.where(Physician.specialties.any(PhysicianSpecialty.code == specialty))
    if gln:
        stmt = stmt.where(Physician.gln == gln)
    if cursor:
        key, _, last_id = cursor.rpartition("|")
        # ASCII digits only, and few: str.isdigit() takes "²", which int() refuses, and an id past
        # 64 bits does not bind (the API answered 500 to both, as Schemathesis found).
        if not re.fullmatch(r"[0-9]{1,18}", last_id):
            raise DirectoryError("invalid page cursor")
        stmt = stmt.where((Physician.search_name > key) | ((Physician.search_name == key) & (Physician.id > int(last_id))))
    rows = list(session.scalars(stmt.order_by(Physician.search_name, Physician.id).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = f"{rows[-1].search_name}|{rows[-1].id}"
    return SearchPage(rows, next_cursor)
