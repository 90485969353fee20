"""The durable delivery queue: leasing, backoff, deferral, failure and expiry.

Deliveries live in the database, so a queued document survives any restart.
A worker *leases* a delivery before working on it and renews the lease by a
heartbeat while it works; a worker that dies (even by `kill -9`) leaves a
lease that runs out within `queue.lease_seconds`, and another worker, or the
restarted one, picks the delivery up again ("better to deliver twice than to
lose mail"). Leases and backoff are `db.leases`, shared with the receipts.

This module is the only code that creates a delivery row or changes its
state: `create_delivery` and `transition`, which applies the table of
`delivery.states` and records the audit event in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.trail import record, savepoint
from myhug.config.settings import QueueSettings
from myhug.db.base import new_id, utcnow
from myhug.db.group_commit import GroupCommit
from myhug.db.leases import Leases
from myhug.db.leases import backoff as _backoff
from myhug.db.session import Database
from myhug.delivery.models import RETRACTION_TYPE, Delivery, Submission
from myhug.delivery.states import PENDING, DeliveryState, check_transition
from myhug.directory.models import Consent, Physician
from myhug.instruments import DELIVERY_LATENCY

S = DeliveryState
PENDING_STATES = tuple(sorted(PENDING))

log = logging.getLogger(__name__)
T = TypeVar("T")


def backoff(age: timedelta, settings: QueueSettings) -> timedelta:
    """Time until the next attempt of work of this age, per the queue settings."""
    return _backoff(age, settings.minimal_backoff, settings.maximal_backoff)


def create_delivery(session: Session, submission: Submission, physician: Physician, *, route: str,
                    recipient_address: str, actor: str, event: str | None = "accepted",
                    detail: dict[str, object] | None = None) -> Delivery:
    """The one place a delivery row is born: `queued`, due now, with its audit event (if any)."""
    now = utcnow()
    delivery = Delivery(
        id=new_id(), submission_id=submission.id, document_id=submission.document_id, physician_id=physician.id,
        recipient_address=recipient_address, route=route, state=S.QUEUED.value, attempts=0,
        next_attempt_at=now, created_at=now, updated_at=now,
    )
    session.add(delivery)
    session.flush()
    if event is not None:
        record(session, event, actor=actor, document_id=delivery.document_id, submission_id=submission.id,
               delivery_id=delivery.id, physician_gln=physician.gln, detail=detail)
    return delivery


def transition(session: Session, delivery: Delivery, to: DeliveryState, *, actor: str, event: str | None = None,
               outcome: str = "success", detail: dict[str, object] | None = None, error: str | None = None,
               record_event: bool = True) -> None:
    """The one place a delivery changes state: checked against the table, lease dropped, event recorded.

    `event` defaults to the new state's name (every state but `queued` is an
    audit event of SPEC §5); `record_event=False` changes the state silently
    (an operator's requeue). Raises `IllegalTransition` on a move the table
    does not allow. Runs in the caller's transaction, so the state and its
    event commit together.
    """
    check_transition(delivery.state, to)
    delivery.state = to.value
    delivery.lease_owner = None
    delivery.lease_until = None
    delivery.last_error = error
    delivery.updated_at = utcnow()
    if to in (DeliveryState.RELAYED, DeliveryState.DEPOSITED) and delivery.created_at is not None:
        DELIVERY_LATENCY.labels(delivery.route).observe((delivery.updated_at - delivery.created_at).total_seconds())
    if record_event:
        # The GLN alone: loading the physician's row would load its specialties too (a second query).
        gln = session.scalar(select(Physician.gln).where(Physician.id == delivery.physician_id))
        record(session, event or to.value, actor=actor, outcome=outcome, document_id=delivery.document_id,
               submission_id=delivery.submission_id, delivery_id=delivery.id, physician_gln=gln, detail=detail)


@dataclass(frozen=True)
class QueueEntry:
    """A row of `myhug queue list`."""

    id: str
    submission_id: str  # the id of the DPI's `250 queued as <id>` reply
    state: str
    route: str
    document_id: str
    recipient: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None


@dataclass(frozen=True)
class Inspection:
    """What the worker reads of a delivery before handing it to its route's agent."""

    route: str
    obstacle: tuple[str, str] | None  # ("fail" | "hold", reason) when it must not go out now


class DeliveryQueue:
    """Operations on the `delivery` table shared by workers and the CLI."""

    def __init__(self, db: Database, settings: QueueSettings, owner: str) -> None:
        self.db = db
        self.settings = settings
        self.owner = owner
        self.leases = Leases(Delivery, Delivery.state.in_(PENDING_STATES), owner, settings.lease_seconds)
        # Outcomes of concurrent deliveries share a transaction (one write lock, one fsync).
        self.outcomes = GroupCommit(db, savepoint, name="delivery-outcomes")

    def record_outcome(self, work: Callable[[Session], T]) -> T:
        """Run `work`, a delivery's outcome (relayed, deposited, deferred...), in the next shared commit.

        It returns once that commit is durable; `work` gets its own savepoint,
        so a failing outcome never takes another delivery's with it.
        """
        return self.outcomes.run(work)

    def claim(self, limit: int = 20) -> list[str]:
        """Lease up to `limit` due deliveries for this worker, oldest due first; returns their ids."""
        # An idle queue is polled without taking the write lock.
        with self.db.reading() as session:
            if session.scalar(select(Delivery.id).where(self.leases.due()).limit(1)) is None:
                return []
        def step(session: Session) -> list[str]:
            return self.leases.claim(session, limit, [Delivery.next_attempt_at])

        return self.db.run(step)

    def still_mine(self, row: Any) -> bool:
        """True if a delivery's freshly read row (an object or plain columns with `lease_owner` and `state`)
        is still leased by this worker and still pending."""
        return self.leases.holds(row) and row.state in PENDING_STATES

    def leased(self, session: Session, delivery_id: str) -> Delivery | None:
        """The delivery, locked, if this worker still holds its lease and it is still pending."""
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        return delivery if delivery is not None and self.still_mine(delivery) else None

    def _settle(self, delivery_id: str, to: DeliveryState, outcome: str, detail: dict[str, object]) -> None:
        """Move a delivery this worker holds to `to`, recording the reason; nothing if the lease is gone."""
        def step(session: Session) -> None:
            delivery = self.leased(session, delivery_id)
            if delivery is not None:
                transition(session, delivery, to, actor="gateway:queue", outcome=outcome, detail=detail,
                           error=str(detail["reason"]))

        self.record_outcome(step)

    def defer(self, delivery_id: str, reason: str) -> None:
        """A temporary failure: retry later, or expire once past the queue lifetime."""
        def step(session: Session) -> None:
            delivery = self.leased(session, delivery_id)
            if delivery is None:
                return
            now = utcnow()
            age = now - delivery.created_at
            if age.total_seconds() >= self.settings.maximal_lifetime:
                transition(session, delivery, S.EXPIRED, actor="gateway:queue", outcome="failure", error=reason,
                           detail={"reason": reason, "attempts": delivery.attempts})
                return
            delay = backoff(age, self.settings)
            transition(session, delivery, S.DEFERRED, actor="gateway:queue", outcome="deferred", error=reason,
                       detail={"reason": reason, "attempts": delivery.attempts,
                               "retry_in_seconds": int(delay.total_seconds())})
            delivery.next_attempt_at = now + delay

        self.record_outcome(step)

    def fail(self, delivery_id: str, reason: str) -> None:
        """A permanent failure: the delivery ends `failed`, with the reason in the trail."""
        self._settle(delivery_id, S.FAILED, "failure", {"reason": reason})

    def hold(self, delivery_id: str, reason: str) -> None:
        """Set a delivery aside (`held`): it cannot be processed as configured; an operator decides."""
        self._settle(delivery_id, S.HELD, "deferred", {"reason": reason})

    def inspect(self, delivery_id: str) -> Inspection | None:
        """A leased delivery's route, and why it must not go out now (None if it no longer exists).

        Checked again just before delivery: a consent revoked while the
        document waited fails it; a physician suspended meanwhile holds it
        (reactivation and `queue retry` resume it). Retraction notices are
        exempt from the consent check: withdrawing a document is always allowed.
        One read transaction and one joined statement for all of it (the consent
        row included): a route lookup and the checks apart cost a delivery two
        transactions and three statements.
        """
        from myhug.directory.service import consent_given

        with self.db.reading() as session:
            row = session.execute(
                select(Delivery.route, Physician.status, Submission.document_type, Consent.designated,
                       Consent.electronic_sending_authorized)
                .join(Submission, Submission.id == Delivery.submission_id)
                .outerjoin(Physician, Physician.id == Delivery.physician_id)
                .outerjoin(Consent, (Consent.patient_ref == Submission.patient_ref)
                           & (Consent.physician_id == Delivery.physician_id))
                .where(Delivery.id == delivery_id)
            ).one_or_none()
            if row is None:
                return None
            route, status, document_type, designated, authorized = row
            if status == "suspended":
                return Inspection(route, ("hold", "the physician's account is suspended"))
            if document_type != RETRACTION_TYPE and not consent_given(designated, authorized):
                return Inspection(route, ("fail", "consent withdrawn: the patient no longer designates or "
                                                  "authorizes this physician"))
            return Inspection(route, None)

    def renew_mine(self, in_flight: Collection[str]) -> int:
        """The heartbeat: extend this worker's leases on the deliveries still in its hands; returns how many.

        Only `in_flight`: a delivery whose outcome could not be recorded (a
        full disk, a database outage) has left the worker's hands, and its
        lease must run out so that any worker takes it again.
        """
        def step(session: Session) -> int:
            return self.leases.renew(session, in_flight)

        return self.db.run(step)

    def release(self, delivery_id: str) -> int:
        """Give back one delivery's lease at once (its outcome could not be recorded); 1 if it was ours."""
        def step(session: Session) -> int:
            return self.leases.release(session, [delivery_id])

        return self.db.run(step)

    def release_mine(self) -> int:
        """On clean shutdown: give back this worker's leases so work resumes at once elsewhere."""
        def step(session: Session) -> int:
            return self.leases.release(session)

        return self.db.run(step)

    def entries(self, include_done: bool = False) -> list[QueueEntry]:
        """The queue as `myhug queue list` shows it; by default only what is not finished."""
        def step(session: Session) -> list[QueueEntry]:
            stmt = select(Delivery).order_by(Delivery.created_at)
            if not include_done:
                stmt = stmt.where(Delivery.state.in_((*PENDING_STATES, "held")))
            return [
                QueueEntry(
                    d.id, d.submission_id, d.state, d.route, d.document_id, d.recipient_address,
                    d.attempts, d.created_at, d.next_attempt_at, d.last_error,
                )
                for d in session.scalars(stmt)
            ]

        return self.db.run(step)

    def retry(self, queue_id: str) -> list[str]:
        """Make deferred or held deliveries due now (`postqueue -i`); returns the ids made due.

        `queue_id` is a delivery id, or the submission id of the `250 queued as <id>`
        reply the DPI logged, which stands for each of its deliveries still retryable.
        """
        def step(session: Session) -> list[str]:
            wanted = queue_id.strip().upper()
            delivery = session.get(Delivery, wanted, with_for_update=True)
            if delivery is not None:
                deliveries = [delivery]
            else:
                deliveries = list(session.scalars(select(Delivery).where(Delivery.submission_id == wanted)
                                                  .order_by(Delivery.id).with_for_update()))
                if not deliveries:
                    raise LookupError(f"no delivery or submission {queue_id}")
                deliveries = [d for d in deliveries if d.state in (S.DEFERRED, S.HELD, S.QUEUED)]
                if not deliveries:
                    raise ValueError(f"submission {wanted} has no deferred or held delivery to retry")
            for d in deliveries:
                if d.state not in (S.DEFERRED, S.HELD, S.QUEUED):
                    raise ValueError(f"delivery {d.id} is {d.state}; only deferred or held ones can be retried")
                if d.state != S.QUEUED:
                    transition(session, d, S.QUEUED, actor="cli", record_event=False, error=d.last_error)
                d.next_attempt_at = utcnow()
                d.lease_owner, d.lease_until = None, None
            return [d.id for d in deliveries]

        return self.db.run(step)
