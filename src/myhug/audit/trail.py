"""Append to and verify the hash-chained audit trail.

Appends happen inside the caller's transaction, so an event exists exactly
when the state change it describes was committed. The single `audit_head`
row is locked (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite) while
appending, which gives gapless sequence numbers in chain order even with
several processes writing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.models import AuditEvent, AuditHead, TrailCursor
from myhug.db.base import utcnow

GENESIS_HASH = "0" * 64

DOCUMENT_EVENTS = frozenset(
    {
        "accepted",
        "refused",
        "relayed",
        "delivered",
        "deposited",
        "notified",
        "read",
        "deferred",
        "failed",
        "expired",
        "retracted",
        "held",
    }
)
ACCOUNT_EVENTS = frozenset(
    {
        "registered", "activated", "login", "login-failed", "logout", "password-changed", "profile-changed",
        "access-denied", "suspended", "reactivated", "password-reset", "mobile-changed",
        "consent-granted", "consent-revoked", "staff-login", "staff-login-failed",
        "sms-capped", "hin-linked", "unlocked", "key-imported", "key-removed",
        "passkey-added", "passkey-removed", "device-trusted", "device-revoked",
        "delegate-linked", "delegate-unlinked", "delegated-read",
    }
)
EVENTS = DOCUMENT_EVENTS | ACCOUNT_EVENTS
# Document events fed back to the DPI as receipts (SPEC §5).
RECEIPT_EVENTS = DOCUMENT_EVENTS - {"refused"}


def canonical_content(
    seq: int,
    occurred_at: datetime,
    event: str,
    actor: str,
    outcome: str,
    document_id: str | None,
    submission_id: str | None,
    delivery_id: str | None,
    physician_gln: str | None,
    detail: str,
) -> bytes:
    """The exact bytes an event's hash covers (sorted-key JSON, UTF-8)."""
    return json.dumps(
        {
            "seq": seq,
            "occurred_at": occurred_at.isoformat(timespec="microseconds"),
            "event": event,
            "actor": actor,
            "outcome": outcome,
            "document_id": document_id,
            "submission_id": submission_id,
            "delivery_id": delivery_id,
            "physician_gln": physician_gln,
            "detail": detail,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def chain_hash(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + content).hexdigest()


def _event_hash(event: AuditEvent, prev_hash: str) -> str:
    return chain_hash(
        prev_hash,
        canonical_content(
            event.seq,
            event.occurred_at,
            event.event,
            event.actor,
            event.outcome,
            event.document_id,
            event.submission_id,
            event.delivery_id,
            event.physician_gln,
            event.detail,
        ),
    )


def record(
    session: Session,
    event: str,
    *,
    actor: str,
    outcome: str = "success",
    document_id: str | None = None,
    submission_id: str | None = None,
    delivery_id: str | None = None,
    physician_gln: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record one event in the caller's transaction; it joins the chain when that transaction commits.

    The event gets its sequence number and hash just before the commit (see
    `_append_pending`), so the chain's head is locked last and for the
    shortest time. `detail` must never hold patient data: it is stored in clear.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    entry = AuditEvent(
        occurred_at=utcnow(),
        event=event,
        actor=actor,
        outcome=outcome,
        document_id=document_id,
        submission_id=submission_id,
        delivery_id=delivery_id,
        physician_gln=physician_gln,
        detail=json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    )
    session.info.setdefault(_PENDING, []).append(entry)
    return entry


def _append_pending(session: Session) -> None:
    """Before a commit: chain the transaction's events under the head lock, the last lock it takes.

    Lock order in the gateway (README, "Deployment"): work items first (claimed
    with SKIP LOCKED), then the rows the work changes, and the audit head last,
    held only until the commit. No two transactions can then wait on each other
    in a cycle through the head, and commit order stays sequence order.

    SQLAlchemy calls this hook for a savepoint's release too. There it does
    nothing: the events wait for the outer commit, so a group commit chains
    every unit's events at once (one head lock, one insert, one head update)
    rather than once per unit while holding the database's write lock.
    """
    if session.in_nested_transaction():
        return
    pending: list[AuditEvent] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
    for entry in pending:
        entry.seq = head.seq + 1
        entry.prev_hash = head.hash
        entry.hash = _event_hash(entry, head.hash)
        session.add(entry)
        head.seq, head.hash = entry.seq, entry.hash
    session.flush()


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """A nested transaction whose audit events are forgotten with it if it rolls back.

    Events wait in the session until the outer commit chains them; a
    savepoint rolled back must take its own events along, not the others'.
    """
    before = list(session.info.get(_PENDING, []))
    try:
        with session.begin_nested():
            yield
    except BaseException:
        session.info[_PENDING] = before
        raise


def _forget_pending(session: Session, *_: object) -> None:
    session.info.pop(_PENDING, None)


_PENDING = "myhug.audit.pending"
sa_event.listen(Session, "before_commit", _append_pending)
sa_event.listen(Session, "after_rollback", _forget_pending)


def events_after_cursor(session: Session, follower: str, limit: int) -> list[AuditEvent]:
    """The next events a follower of the trail has not yet taken, in sequence order.

    The follower's cursor row is locked until the caller's transaction ends,
    so two processes following the same trail take turns, and the caller
    advances the cursor (`advance_cursor`) in the same transaction as what it
    made of the events: each event is taken exactly once. Sequence numbers are
    assigned under the head lock, so commit order is sequence order and a
    later event never becomes visible before an earlier one.
    """
    cursor = session.get(TrailCursor, follower, with_for_update=True)
    if cursor is None:
        cursor = TrailCursor(name=follower, last_seq=0)
        session.add(cursor)
        session.flush()
    return list(session.scalars(
        select(AuditEvent).where(AuditEvent.seq > cursor.last_seq).order_by(AuditEvent.seq).limit(limit)))


def advance_cursor(session: Session, follower: str, last_seq: int) -> None:
    """Record that the follower took every event up to `last_seq` (never moves back)."""
    cursor = session.get(TrailCursor, follower, with_for_update=True)
    if cursor is None:
        session.add(TrailCursor(name=follower, last_seq=last_seq))
    elif last_seq > cursor.last_seq:
        cursor.last_seq = last_seq


@dataclass(frozen=True)
class Verification:
    """The outcome of `verify`: `first_bad` is the seq where the chain first breaks."""

    ok: bool
    checked: int
    first_bad: int | None = None
    reason: str = ""


def iter_events(session: Session, after: int = 0, batch: int = 1000) -> Iterator[AuditEvent]:
    """Events in sequence order, fetched in batches."""
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].seq


def verify(session: Session) -> Verification:
    """Recompute the chain and name the first modified, deleted or reordered event."""
    prev_hash = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for event in iter_events(session):
        if event.seq != expected_seq:
            return Verification(False, checked, expected_seq, f"event {expected_seq} is missing (deleted)")
        if event.prev_hash != prev_hash:
            return Verification(False, checked, event.seq, f"event {event.seq} does not follow event {event.seq - 1} (deleted or reordered)")
        if _event_hash(event, prev_hash) != event.hash:
            return Verification(False, checked, event.seq, f"event {event.seq} was modified")
        prev_hash = event.hash
        expected_seq += 1
        checked += 1
    head = session.get(AuditHead, 1)
    if head is None:
        return Verification(False, checked, None, "the chain head is missing")
    if head.seq != checked or head.hash != prev_hash:
        return Verification(False, checked, checked + 1, f"events after {checked} are missing (head says {head.seq})")
    return Verification(True, checked)
