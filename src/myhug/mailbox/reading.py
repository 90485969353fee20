"""The hosted mailbox as a physician sees it: lists, patients, opening a document."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.blobs.store import Sealer
from myhug.db.base import utcnow
from myhug.delivery.models import Delivery, Submission
from myhug.delivery.queue import transition
from myhug.delivery.states import DeliveryState
from myhug.directory.delegation import Delegate
from myhug.directory.models import Physician
from myhug.directory.search import fold
from myhug.mailbox.models import MailboxItem
from myhug.mailbox.patient_names import matches_birthdate, sort_key, surname_first

PAGE_SIZE = 20


@dataclass(frozen=True)
class DocumentSummary:
    item_id: int
    deposited_at: datetime
    read: bool
    state: str
    document_type: str | None
    subject: str | None
    patient_ref: str
    patient_name: str | None
    patient_birthdate: str | None
    filenames: list[str]
    retracted_at: datetime | None = None  # withdrawn by the DPI: the line stays, the content is gone
    retraction_reason: str | None = None
    author: str | None = None  # who signed it and the HUG service that sent it, when the DPI said
    department: str | None = None
    read_by: str | None = None  # the delegate who opened it first ("lu par …")

    @property
    def patient_surname_first(self) -> str:
        """The name as a list sorted by patient shows it: "Favre Agnès"."""
        return surname_first(self.patient_name)


@dataclass(frozen=True)
class PatientSummary:
    patient_ref: str
    name: str | None
    birthdate: str | None
    documents: int
    unread: int
    last_at: datetime

    @property
    def surname_first(self) -> str:
        """The name as the sorted list shows it: "Favre Agnès"."""
        return surname_first(self.name)


@dataclass(frozen=True)
class DocumentFilter:
    """Which documents "Mes documents" shows: `unread`, `all` or `recent` (last `days`)."""

    show: str = "all"
    days: int = 30
    types: tuple[str, ...] = ()
    patient_ref: str | None = None
    query: str = ""  # a patient's name (any part, accents and case aside), a birth date (02.03.1948) or a service
    department: str = ""  # only the documents of this HUG service
    sort: str = "date"  # date (newest first), patient (by name) or type


SORTS = {"date": "Date (récents d’abord)", "patient": "Patient", "type": "Type de document"}


def matches_patient(name: str | None, birthdate: str | None, query: str) -> bool:
    """Does the (unsealed) patient name or birth date match what the physician typed?

    Name words match in any order, accents and case aside ("muller" finds "Müller");
    a birth date matches as a Swiss secretary types it (02.03.1948, 2.3.1948,
    02.03.48, 02/03/1948, 1948-03-02), by day and month (02.03) or by year
    (1948): see `patient_names.matches_birthdate`.
    """
    text = query.strip()
    if not text:
        return True
    folded_name = fold(name or "")
    if all(word in folded_name for word in fold(text).split()):
        return True
    return matches_birthdate(birthdate, text)


def matches_sender(summary: DocumentSummary, query: str) -> bool:
    """Does the query name the document's service or author ("cardio" finds "Service de cardiologie")?"""
    words = fold(query).split()
    sender = fold(f"{summary.department or ''} {summary.author or ''}")
    return bool(words) and bool(sender) and all(word in sender for word in words)


class DocumentUnavailable(LookupError):
    """Not this physician's, not existing, retracted or expired: all look the same from outside."""


def _metadata(session: Session, sealer: Sealer, submission: Submission) -> dict[str, Any]:
    return dict(json.loads(sealer.open_id(session, submission.metadata_blob_id)))


def summarize(session: Session, sealer: Sealer, item: MailboxItem) -> DocumentSummary:
    """What the list and the page show of a document (its sealed metadata opened, or why it is gone)."""
    submission = item.submission
    meta = _metadata(session, sealer, submission) if item.state == "available" else {}
    reason = None
    if item.state == "retracted" and item.retraction_blob_id:
        reason = sealer.open_id(session, item.retraction_blob_id).decode()
    return DocumentSummary(
        item_id=item.id, deposited_at=item.deposited_at, read=item.read_at is not None, state=item.state,
        document_type=submission.document_type, subject=meta.get("subject"), patient_ref=submission.patient_ref,
        patient_name=meta.get("patient_name"), patient_birthdate=meta.get("patient_birthdate"),
        filenames=list(meta.get("filenames", [])),
        retracted_at=item.retracted_at if item.state == "retracted" else None, retraction_reason=reason,
        author=meta.get("author"), department=meta.get("department"), read_by=item.read_by,
    )


def list_documents(session: Session, sealer: Sealer, physician_id: int, flt: DocumentFilter,
                   page: int = 1) -> tuple[list[DocumentSummary], int]:
    """One page of the physician's documents, newest first, and the total count."""
    stmt = (
        select(MailboxItem)
        .join(Submission, Submission.id == MailboxItem.submission_id)
        .where(MailboxItem.physician_id == physician_id)
    )
    if flt.show == "unread":
        # A withdrawn document the physician has not seen yet stays among the unread: its line says so.
        stmt = stmt.where(MailboxItem.read_at.is_(None), MailboxItem.state.in_(("available", "retracted")))
    elif flt.show == "recent":
        stmt = stmt.where(MailboxItem.deposited_at >= utcnow() - timedelta(days=flt.days))
    if flt.types:
        stmt = stmt.where(Submission.document_type.in_(flt.types))
    if flt.patient_ref:
        stmt = stmt.where(Submission.patient_ref == flt.patient_ref)
    items = list(session.scalars(stmt.order_by(MailboxItem.deposited_at.desc(), MailboxItem.id.desc())))
    start = (max(page, 1) - 1) * PAGE_SIZE
    if not flt.query and not flt.department and flt.sort == "date":
        return [summarize(session, sealer, item) for item in items[start : start + PAGE_SIZE]], len(items)
    # Names, birth dates and services are sealed: searching or sorting by them opens each document's metadata.
    summaries = [s for s in (summarize(session, sealer, item) for item in items)
                 if (matches_patient(s.patient_name, s.patient_birthdate, flt.query) or matches_sender(s, flt.query))
                 and (not flt.department or fold(s.department or "") == fold(flt.department))]
    if flt.sort == "patient":
        summaries.sort(key=lambda s: (sort_key(s.patient_name), -s.deposited_at.timestamp()))
    elif flt.sort == "type":
        summaries.sort(key=lambda s: (s.document_type or "~", -s.deposited_at.timestamp()))
    return summaries[start : start + PAGE_SIZE], len(summaries)


def mark_unread(session: Session, physician: Physician, item_id: int, actor: str) -> None:
    """Show a document as new again (a reminder for the physician; the trail keeps that it was read)."""
    own_item(session, physician, item_id, actor).read_at = None


def list_patients(session: Session, sealer: Sealer, physician_id: int, show: str = "all",
                  days: int = 90, query: str = "") -> list[PatientSummary]:
    """The patients with documents for this physician, per the profile's choice."""
    items = session.scalars(
        select(MailboxItem).where(MailboxItem.physician_id == physician_id, MailboxItem.state == "available")
    )
    patients: dict[str, dict[str, Any]] = {}
    for item in items:
        entry = patients.setdefault(
            item.submission.patient_ref, {"meta": None, "documents": 0, "unread": 0, "last_at": item.deposited_at}
        )
        entry["documents"] += 1
        entry["unread"] += item.read_at is None
        if item.deposited_at >= entry["last_at"] or entry["meta"] is None:
            entry["last_at"] = max(entry["last_at"], item.deposited_at)
            entry["meta"] = _metadata(session, sealer, item.submission)
    horizon = utcnow() - timedelta(days=days)
    result = [
        PatientSummary(ref, e["meta"].get("patient_name"), e["meta"].get("patient_birthdate"),
                       e["documents"], e["unread"], e["last_at"])
        for ref, e in patients.items()
        if show == "all" or (show == "unread" and e["unread"]) or (show == "recent" and e["last_at"] >= horizon)
    ]
    if query:
        result = [p for p in result if matches_patient(p.name, p.birthdate, query)]
    return sorted(result, key=lambda p: (sort_key(p.name), p.patient_ref))


def unread_count(session: Session, physician_id: int) -> int:
    """Documents the physician has not opened yet (the menu shows it on every page)."""
    return int(session.scalar(
        select(func.count()).select_from(MailboxItem).where(
            MailboxItem.physician_id == physician_id, MailboxItem.read_at.is_(None), MailboxItem.state == "available")
    ) or 0)


def own_item(session: Session, physician: Physician, item_id: int, actor: str) -> MailboxItem:
    """The physician's available document; anything else is audited `access-denied` and raises `DocumentUnavailable`."""
    item = session.get(MailboxItem, item_id)
    if item is None or item.physician_id != physician.id or item.state != "available":
        record(session, "access-denied", actor=actor, outcome="failure", physician_gln=physician.gln,
               detail={"mailbox_item": item_id, "reason": "not found" if item is None or item.physician_id != physician.id else item.state})
        raise DocumentUnavailable(item_id)
    return item


def document_detail(session: Session, sealer: Sealer, physician: Physician, item_id: int, actor: str) -> tuple[DocumentSummary, list[tuple[str, str, int]]]:
    """The summary and the attachments (filename, content type, size) of one of the physician's documents."""
    item = own_item(session, physician, item_id, actor)
    summary = summarize(session, sealer, item)
    files = [(summary.filenames[d.position] if d.position < len(summary.filenames) else f"document-{d.position + 1}",
              d.content_type, d.size) for d in item.submission.documents]
    return summary, files


def withdrawn_detail(session: Session, sealer: Sealer, physician: Physician, item_id: int,
                     mark_seen: bool = True) -> DocumentSummary:
    """What the page of a document the DPI withdrew says: when, and why if the DPI said; never its content.

    Seeing it counts as seen (it leaves the unread ones), but not as `read`:
    nothing of the document is shown. Raises `DocumentUnavailable` for
    anything but this physician's withdrawn document.
    """
    item = session.get(MailboxItem, item_id)
    if item is None or item.physician_id != physician.id or item.state != "retracted":
        raise DocumentUnavailable(item_id)
    if item.read_at is None and mark_seen:  # a delegate's visit leaves the physician's own mark alone
        item.read_at = utcnow()
    return summarize(session, sealer, item)


def open_attachment(session: Session, sealer: Sealer, physician: Physician, item_id: int, position: int,
                    actor: str, reader: Delegate | None = None) -> tuple[str, str, bytes]:
    """Decrypt one attachment for its owner; the first opening records `read`."""
    item = own_item(session, physician, item_id, actor)
    documents = item.submission.documents
    if not 0 <= position < len(documents):
        raise DocumentUnavailable(item_id)
    document = documents[position]
    meta = _metadata(session, sealer, item.submission)
    filenames = meta.get("filenames", [])
    filename = filenames[position] if position < len(filenames) else f"document-{position + 1}"
    data = sealer.open_id(session, document.blob_id)
    record_reading(session, item, physician, actor, reader)
    return filename, document.content_type, data


def record_reading(session: Session, item: MailboxItem, physician: Physician, actor: str,
                   reader: Delegate | None = None) -> None:
    """The content of a document is given out: the DPI's `read` receipt, once, and the list's state.

    The receipt follows the delivery's state, not `read_at`: `read_at` is the
    list's "seen" mark, which the physician may also set (or clear) without
    opening anything, and that must neither send nor withhold the receipt.
    When a `reader` reads for the physician (an assistant, a stand-in), the
    receipt and a `delegated-read` event name both, the line says "lu par …",
    and the physician's own "non lu" mark stays as it was.
    """
    delegate: dict[str, object] = {"delegate": reader.as_detail()} if reader is not None else {}
    delivery = session.get(Delivery, item.delivery_id)
    if delivery is not None and delivery.state == DeliveryState.DEPOSITED:
        transition(session, delivery, DeliveryState.READ, actor=actor, detail=delegate or None)
    elif item.read_at is None and reader is None:  # read before, then marked unread: the trail says it was read again
        record(session, "read", actor=actor, document_id=item.submission.document_id,
               submission_id=item.submission_id, delivery_id=item.delivery_id, physician_gln=physician.gln)
    if reader is not None:
        record(session, "delegated-read", actor=actor, document_id=item.submission.document_id,
               submission_id=item.submission_id, delivery_id=item.delivery_id, physician_gln=physician.gln,
               detail=delegate)
        item.read_by = item.read_by or reader.label
    elif item.read_at is None:
        item.read_at = utcnow()


def mark_seen(session: Session, physician: Physician, item_ids: list[int] | None, seen: bool) -> int:
    """The list's bulk action: mark the given documents (None: every one) as seen, or as new again.

    Only the list's mark moves (`read_at`): marking a document seen sends no
    read receipt and records no `read`, since nothing of it was opened; its
    first opening still does. A withdrawn document can be marked seen, never
    new again. Returns how many documents changed.
    """
    stmt = update(MailboxItem).where(MailboxItem.physician_id == physician.id)
    if item_ids is not None:
        stmt = stmt.where(MailboxItem.id.in_(item_ids))
    if seen:
        stmt = stmt.where(MailboxItem.read_at.is_(None), MailboxItem.state.in_(("available", "retracted")))
        stmt = stmt.values(read_at=utcnow())
    else:
        stmt = stmt.where(MailboxItem.read_at.is_not(None), MailboxItem.state == "available").values(read_at=None)
    result = session.execute(stmt.execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
