"""The durable delivery queue: leasing, backoff, deferral, failure and expiry.

Deliveries live in the database, so a queued document survives any restart.
A worker *leases* a delivery before working on it and renews the lease by a
heartbeat while it works; a worker that dies (even by `kill -9`) leaves a
lease that runs out within `queue.lease_seconds`, and another worker, or the
restarted one, picks the delivery up again ("better to deliver twice than to
lose mail"). Backoff doubles with the
delivery's age between a minimum and a maximum, as Postfix does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.config.settings import QueueSettings
from myhug.db.base import utcnow
from myhug.db.session import Database
from myhug.directory.models import Physician
from myhug.gateway.models import PENDING_STATES, Delivery

log = logging.getLogger(__name__)


def backoff(age: timedelta, settings: QueueSettings) -> timedelta:
    """Time until the next attempt: the delivery's age, clamped to [minimal, maximal]."""
    seconds = min(max(age.total_seconds(), settings.minimal_backoff), settings.maximal_backoff)
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class QueueEntry:
    """A row of `myhug queue list`."""

    id: str
    state: str
    route: str
    document_id: str
    recipient: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None


class DeliveryQueue:
    """Operations on the `delivery` table shared by workers and the CLI."""

    def __init__(self, db: Database, settings: QueueSettings, owner: str) -> None:
        self.db = db
        self.settings = settings
        self.owner = owner

    def claim(self, limit: int = 20) -> list[str]:
        """Lease up to `limit` due deliveries for this worker; returns their ids."""
        now = utcnow()
        due = (
            select(Delivery.id)
            .where(
                Delivery.state.in_(PENDING_STATES),
                Delivery.next_attempt_at <= now,
                or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
            )
            .order_by(Delivery.next_attempt_at)
        )
        # An idle queue is polled without taking the write lock.
        with self.db.reading() as session:
            if session.scalar(due.limit(1)) is None:
                return []
        with self.db.transaction() as session:
            ids = list(session.scalars(due.limit(limit).with_for_update(skip_locked=True)))
            if ids:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids))
                    .values(
                        lease_owner=self.owner,
                        lease_until=now + timedelta(seconds=self.settings.lease_seconds),
                        attempts=Delivery.attempts + 1,
                    )
                )
        return ids

    def leased(self, session: Session, delivery_id: str) -> Delivery | None:
        """The delivery if this worker still holds its lease and it is still pending."""
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.lease_owner != self.owner or delivery.state not in PENDING_STATES:
            return None
        return delivery

    def finish(self, session: Session, delivery: Delivery, state: str, error: str | None = None) -> None:
        """Move a leased delivery to a final state and drop the lease."""
        delivery.state = state
        delivery.lease_owner = None
        delivery.lease_until = None
        delivery.last_error = error
        delivery.updated_at = utcnow()

    def _settle(self, session: Session, delivery: Delivery, state: str, event: str, outcome: str,
                detail: dict[str, object]) -> None:
        """Move a leased delivery to `state` (releasing the lease) and record `event` for it."""
        self.finish(session, delivery, state, str(detail["reason"]))
        physician = session.get(Physician, delivery.physician_id)
        record(session, event, actor="gateway:queue", outcome=outcome, document_id=delivery.document_id,
               submission_id=delivery.submission_id, delivery_id=delivery.id,
               physician_gln=physician.gln if physician else None, detail=detail)

    def defer(self, delivery_id: str, reason: str) -> None:
        """A temporary failure: retry later, or expire once past the queue lifetime."""
        with self.db.transaction() as session:
            delivery = self.leased(session, delivery_id)
            if delivery is None:
                return
            now = utcnow()
            age = now - delivery.created_at
            if age.total_seconds() >= self.settings.maximal_lifetime:
                self._settle(session, delivery, "expired", "expired", "failure",
                             {"reason": reason, "attempts": delivery.attempts})
                return
            delay = backoff(age, self.settings)
            self._settle(session, delivery, "deferred", "deferred", "deferred",
                         {"reason": reason, "attempts": delivery.attempts,
                          "retry_in_seconds": int(delay.total_seconds())})
            delivery.next_attempt_at = now + delay

    def fail(self, delivery_id: str, reason: str) -> None:
        """A permanent failure: the delivery ends `failed`, with the reason in the trail."""
        with self.db.transaction() as session:
            delivery = self.leased(session, delivery_id)
            if delivery is not None:
                self._settle(session, delivery, "failed", "failed", "failure", {"reason": reason})

    def hold(self, delivery_id: str, reason: str) -> None:
        """Set a delivery aside (`held`): it cannot be processed as configured; an operator decides."""
        with self.db.transaction() as session:
            delivery = self.leased(session, delivery_id)
            if delivery is not None:
                self._settle(session, delivery, "held", "held", "deferred", {"reason": reason})

    def obstacle(self, delivery_id: str) -> tuple[str, str] | None:
        """Why a leased delivery must not go out now: ("fail" | "hold", reason), or None.

        Checked again just before delivery: a consent revoked while the
        document waited fails it; a physician suspended meanwhile holds it
        (reactivation and `queue retry` resume it). Retraction notices are
        exempt from the consent check: withdrawing a document is always allowed.
        """
        from myhug.directory.service import has_consent

        with self.db.reading() as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                return None
            physician = session.get(Physician, delivery.physician_id)
            if physician is not None and physician.status == "suspended":
                return "hold", "the physician's account is suspended"
            submission = delivery.submission
            if submission.document_type != "retraction-notice" and not has_consent(
                session, submission.patient_ref, delivery.physician_id
            ):
                return "fail", "consent withdrawn: the patient no longer designates or authorizes this physician"
            return None

    def renew_mine(self) -> int:
        """The heartbeat: extend the leases this worker holds on pending deliveries; returns how many."""
        with self.db.transaction() as session:
            result = session.execute(
                update(Delivery)
                .where(Delivery.lease_owner == self.owner, Delivery.state.in_(PENDING_STATES))
                .values(lease_until=utcnow() + timedelta(seconds=self.settings.lease_seconds))
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def release_mine(self) -> int:
        """On clean shutdown: give back this worker's leases so work resumes at once elsewhere."""
        with self.db.transaction() as session:
            result = session.execute(
                update(Delivery)
                .where(Delivery.lease_owner == self.owner, Delivery.state.in_(PENDING_STATES))
                .values(lease_owner=None, lease_until=None)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def entries(self, include_done: bool = False) -> list[QueueEntry]:
        """The queue as `myhug queue list` shows it; by default only what is not finished."""
        with self.db.transaction() as session:
            stmt = select(Delivery).order_by(Delivery.created_at)
            if not include_done:
                stmt = stmt.where(Delivery.state.in_((*PENDING_STATES, "held")))
            return [
                QueueEntry(
                    d.id, d.state, d.route, d.document_id, d.recipient_address,
                    d.attempts, d.created_at, d.next_attempt_at, d.last_error,
                )
                for d in session.scalars(stmt)
            ]

    def retry(self, delivery_id: str) -> str:
        """Make a deferred or held delivery due now (`postqueue -i`); returns its new state."""
        with self.db.transaction() as session:
            delivery = session.get(Delivery, delivery_id.upper(), with_for_update=True)
            if delivery is None:
                raise LookupError(f"no delivery {delivery_id}")
            if delivery.state not in ("deferred", "held", "queued"):
                raise ValueError(f"delivery {delivery.id} is {delivery.state}; only deferred or held ones can be retried")
            delivery.state = "queued"
            delivery.next_attempt_at = utcnow()
            delivery.lease_owner = None
            delivery.lease_until = None
            return delivery.state
