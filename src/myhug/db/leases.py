"""The one lease helper of every work queue (deliveries, receipts): claim, renew, release, backoff.

A row is *due* when its own readiness condition holds, its `next_attempt_at`
has come and no live lease covers it. Claiming takes due rows with
`FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite serialises writers anyway),
stamps this process as the owner for `lease_seconds`, and counts an attempt.
A live process renews its leases by a heartbeat; a dead one's run out, and
another process claims the rows again: at least once, never lost.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, inspect, or_, select, update
from sqlalchemy.orm import Session

from myhug.db.base import utcnow


def backoff(age: timedelta, minimal: float, maximal: float) -> timedelta:
    """Time until the next attempt: the work's age, clamped to [minimal, maximal] seconds (as Postfix)."""
    return timedelta(seconds=min(max(age.total_seconds(), minimal), maximal))


class Leases:
    """Leases on the rows of one table with `lease_owner`, `lease_until`, `next_attempt_at`, `attempts`."""

    def __init__(self, model: Any, ready: ColumnElement[bool], owner: str, lease_seconds: float) -> None:
        self.model = model
        self.key = inspect(model).primary_key[0]  # the rows' identity, whatever its name
        self.ready = ready
        self.owner = owner
        self.lease_seconds = lease_seconds

    def due(self) -> ColumnElement[bool]:
        """The condition of a row that may be claimed now."""
        now = utcnow()
        m = self.model
        condition: ColumnElement[bool] = self.ready & (m.next_attempt_at <= now) & or_(
            m.lease_until.is_(None), m.lease_until < now)
        return condition

    def claim(self, session: Session, limit: int, order_by: Sequence[Any],
              where: ColumnElement[bool] | None = None) -> list[Any]:
        """Lease up to `limit` due rows (also meeting `where`) for this owner; returns their keys, in order."""
        m = self.model
        condition = self.due() if where is None else self.due() & where
        ids = list(session.scalars(select(self.key).where(condition).order_by(*order_by).limit(limit)
                                   .with_for_update(skip_locked=True)))
        if ids:
            session.execute(update(m).where(self.key.in_(ids)).values(
                lease_owner=self.owner, lease_until=utcnow() + timedelta(seconds=self.lease_seconds),
                attempts=m.attempts + 1))
        return ids

    def _mine(self, keys: Collection[Any] | None) -> ColumnElement[bool]:
        """This owner's leases on rows still ready, limited to `keys` when given."""
        m = self.model
        mine: ColumnElement[bool] = (m.lease_owner == self.owner) & self.ready
        return mine & self.key.in_(list(keys)) if keys is not None else mine

    def renew(self, session: Session, keys: Collection[Any] | None = None) -> int:
        """The heartbeat: extend the leases this owner holds on rows still ready; returns how many.

        `keys` limits it to the rows still in the owner's hands: a row whose
        outcome could not be recorded must not be kept forever by a live
        process's heartbeat, but run out and be taken again.

        Rows locked right now are skipped, not waited for (`SKIP LOCKED`): they
        are being settled by this owner's group of outcomes, which locks
        several rows in its own order. A heartbeat that waited for them
        while holding others deadlocked against that group on PostgreSQL.
        """
        m = self.model
        if keys is not None and not keys:
            return 0
        ids = list(session.scalars(select(self.key).where(self._mine(keys)).with_for_update(skip_locked=True)))
        if not ids:
            return 0
        result = session.execute(update(m).where(self.key.in_(ids)).values(
            lease_until=utcnow() + timedelta(seconds=self.lease_seconds)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def release(self, session: Session, keys: Collection[Any] | None = None) -> int:
        """Give this owner's leases back (only those of `keys`, when given), so the work resumes at once
        elsewhere: on a clean stop, or when a row's outcome could not be recorded."""
        m = self.model
        result = session.execute(update(m).where(self._mine(keys)).values(lease_owner=None, lease_until=None))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def holds(self, row: Any) -> bool:
        """True if this owner holds the (locked, freshly read) row's lease and the row is still ready."""
        return row is not None and row.lease_owner == self.owner
