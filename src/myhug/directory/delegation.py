"""Who may read a physician's documents besides the physician: assistants and stand-ins.

- An **assistant** (MPA) has a personal account, registered at the desk with
  a checked mobile, as a physician is. The desk links it to physicians at
  their request; each physician sees the link in "Mon profil" and can end it.
- A **stand-in** is another activated physician, named by GLN in "Mon
  profil", with a first and a last day (inclusive, Swiss dates). Outside that
  window the stand-in sees nothing.

A delegate reads; it never changes the physician's settings, links anyone,
or moves the physician's own "non lu" marks. Every link, end of link and
delegated read is audited with both identities (`delegate-linked`,
`delegate-unlinked`, `delegated-read`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.crypto.passwords import hash_password, readable_password
from myhug.db.base import utcnow
from myhug.directory.identifiers import InvalidIdentifier, normalize_mobile, validate_gln
from myhug.directory.models import Assistant, Delegation, Physician
from myhug.directory.service import DirectoryError, find_by_gln, new_login

SWISS = ZoneInfo("Europe/Zurich")
MAX_STAND_IN_DAYS = 366


def today() -> date:
    """The day as the physicians' calendars say it (a stand-in's window is in Swiss days)."""
    return datetime.now(SWISS).date()


@dataclass(frozen=True)
class Delegate:
    """The person reading for a physician, as pages, receipts and the trail name them."""

    kind: str  # "assistant" | "stand-in"
    id: int
    name: str
    gln: str | None = None
    login: str | None = None

    @property
    def label(self) -> str:
        """"Claire Rochat (assistante)", "Dr Paul Favre (remplaçant·e)": what "lu par …" says."""
        return f"{self.name} (assistant·e)" if self.kind == "assistant" else f"Dr {self.name} (remplaçant·e)"

    def as_detail(self) -> dict[str, str | int | None]:
        """The delegate in an audit event's detail (BALP: the user agent reading on behalf of the physician)."""
        return {"kind": self.kind, "id": self.id, "name": self.name, "gln": self.gln, "login": self.login}

    @classmethod
    def assistant(cls, assistant: Assistant) -> Delegate:
        return cls("assistant", assistant.id, assistant.display_name, None, assistant.login)

    @classmethod
    def stand_in(cls, physician: Physician) -> Delegate:
        return cls("stand-in", physician.id, physician.display_name, physician.gln, physician.login)


@dataclass(frozen=True)
class AssistantRegistration:
    assistant: Assistant
    temporary_password: str


def register_assistant(session: Session, *, given_name: str, family_name: str, mobile: str,
                       physician_glns: list[str], actor: str, email: str | None = None) -> AssistantRegistration:
    """An assistant's account, linked to the physicians who asked; the temporary password is returned once."""
    if not family_name.strip():
        raise DirectoryError("a family name is required", french="Le nom est obligatoire.")
    if not physician_glns:
        raise DirectoryError("an assistant is linked to at least one physician",
                             french="Indiquez au moins un médecin (GLN).")
    physicians = [_physician(session, gln) for gln in physician_glns]
    temporary = readable_password()
    assistant = Assistant(login=new_login(session, given_name, family_name, fallback="assistant"),
                          given_name=given_name.strip(), family_name=family_name.strip(),
                          mobile=normalize_mobile(mobile), email=email or None,
                          password_hash=hash_password(temporary), password_must_change=True, status="registered",
                          created_at=utcnow())
    session.add(assistant)
    session.flush()
    record(session, "registered", actor=actor, detail={"assistant": assistant.login})
    for physician in physicians:
        link_assistant(session, physician, assistant, actor)
    return AssistantRegistration(assistant, temporary)


def _physician(session: Session, gln: str) -> Physician:
    physician = find_by_gln(session, validate_gln(gln))
    if physician is None:
        raise DirectoryError(f"no physician with GLN {gln}", french=f"Aucun médecin avec le GLN {gln}.")
    return physician


def link_assistant(session: Session, physician: Physician, assistant: Assistant, actor: str) -> Delegation:
    """The physician's documents become readable by the assistant (the desk does it, at the physician's request)."""
    existing = session.scalar(select(Delegation).where(
        Delegation.physician_id == physician.id, Delegation.assistant_id == assistant.id,
        Delegation.ended_at.is_(None)))
    if existing is not None:
        return existing
    link = Delegation(physician_id=physician.id, assistant_id=assistant.id, created_at=utcnow())
    session.add(link)
    session.flush()
    record(session, "delegate-linked", actor=actor, physician_gln=physician.gln,
           detail={"delegation": link.id, "delegate": Delegate.assistant(assistant).as_detail()})
    return link


def add_stand_in(session: Session, physician: Physician, stand_in_gln: str, starts_on: date, ends_on: date,
                 actor: str) -> Delegation:
    """A colleague reads the physician's documents from `starts_on` to `ends_on` inclusive."""
    try:
        gln = validate_gln(stand_in_gln)
    except InvalidIdentifier as exc:
        raise DirectoryError("invalid GLN", french=f"Ce GLN n’est pas valide : {exc.in_french}") from None
    colleague = find_by_gln(session, gln)
    if colleague is None or colleague.status != "activated":
        raise DirectoryError("no activated physician with this GLN",
                             french="Aucun médecin avec un compte myHUG activé ne porte ce GLN.")
    if colleague.id == physician.id:
        raise DirectoryError("a physician cannot stand in for themselves",
                             french="Vous ne pouvez pas vous remplacer vous-même.")
    if ends_on < starts_on:
        raise DirectoryError("the window ends before it starts",
                             french="La date de fin précède la date de début.")
    if ends_on < today():
        raise DirectoryError("the window is over", french="Cette période est déjà passée.")
    if (ends_on - starts_on).days >= MAX_STAND_IN_DAYS:
        raise DirectoryError("a stand-in lasts at most a year", french="Un remplacement dure au plus un an.")
    link = Delegation(physician_id=physician.id, stand_in_id=colleague.id, starts_on=starts_on, ends_on=ends_on,
                      created_at=utcnow())
    session.add(link)
    session.flush()
    record(session, "delegate-linked", actor=actor, physician_gln=physician.gln,
           detail={"delegation": link.id, "delegate": Delegate.stand_in(colleague).as_detail(),
                   "from": starts_on.isoformat(), "to": ends_on.isoformat()})
    return link


def end_delegation(session: Session, physician: Physician, delegation_id: int, actor: str) -> bool:
    """The physician ends a link (assistant or stand-in) at once; False if it is not theirs or already ended."""
    link = session.get(Delegation, delegation_id)
    if link is None or link.physician_id != physician.id or link.ended_at is not None:
        return False
    link.ended_at = utcnow()
    record(session, "delegate-unlinked", actor=actor, physician_gln=physician.gln,
           detail={"delegation": link.id, "delegate": _delegate_of(session, link).as_detail()})
    return True


def set_notify(session: Session, physician: Physician, delegation_id: int, notify: bool) -> bool:
    """Whether the assistant also gets the physician's notifications (the physician chooses)."""
    link = session.get(Delegation, delegation_id)
    if link is None or link.physician_id != physician.id or link.assistant_id is None or link.ended_at is not None:
        return False
    link.notify = notify
    return True


def _delegate_of(session: Session, link: Delegation) -> Delegate:
    if link.assistant_id is not None:
        assistant = session.get(Assistant, link.assistant_id)
        assert assistant is not None
        return Delegate.assistant(assistant)
    colleague = session.get(Physician, link.stand_in_id)
    assert colleague is not None
    return Delegate.stand_in(colleague)


def _live(on: date) -> object:
    """Links in force on `on`: not ended, and for stand-ins, inside their window."""
    return (Delegation.ended_at.is_(None)) & or_(
        Delegation.assistant_id.is_not(None), (Delegation.starts_on <= on) & (Delegation.ends_on >= on))


@dataclass(frozen=True)
class Link:
    """A link as "Mon profil" lists it."""

    id: int
    delegate: Delegate
    starts_on: date | None
    ends_on: date | None
    notify: bool


def links_of(session: Session, physician_id: int) -> list[Link]:
    """The physician's links not ended: assistants, and stand-ins whose window is not over."""
    rows = session.scalars(select(Delegation).where(
        Delegation.physician_id == physician_id, Delegation.ended_at.is_(None),
        or_(Delegation.ends_on.is_(None), Delegation.ends_on >= today())).order_by(Delegation.id))
    return [Link(row.id, _delegate_of(session, row), row.starts_on, row.ends_on, row.notify) for row in rows]


def readable_for(session: Session, *, assistant_id: int | None = None, stand_in_id: int | None = None,
                 on: date | None = None) -> list[Physician]:
    """The physicians whose documents this assistant or stand-in may read today, by name."""
    column = Delegation.assistant_id if assistant_id is not None else Delegation.stand_in_id
    who = assistant_id if assistant_id is not None else stand_in_id
    return list(session.scalars(
        select(Physician).join(Delegation, Delegation.physician_id == Physician.id)
        .where(column == who, _live(on or today()), Physician.status != "suspended")  # type: ignore[arg-type]
        .order_by(Physician.family_name, Physician.given_name)
    ))


def may_read_for(session: Session, owner_id: int, *, assistant_id: int | None = None,
                 stand_in_id: int | None = None, on: date | None = None) -> bool:
    """Is the link between this delegate and the physician `owner_id` in force today?"""
    return any(p.id == owner_id for p in readable_for(session, assistant_id=assistant_id, stand_in_id=stand_in_id,
                                                        on=on))


def assistants_to_notify(session: Session, physician_id: int) -> list[Assistant]:
    """The linked assistants the physician chose to notify too, with an address to notify."""
    return list(session.scalars(
        select(Assistant).join(Delegation, Delegation.assistant_id == Assistant.id)
        .where(Delegation.physician_id == physician_id, Delegation.ended_at.is_(None), Delegation.notify.is_(True),
               Assistant.status != "suspended", Assistant.email.is_not(None))
    ))
