"""Group commit: units of work from many callers committed together, each in its own savepoint.

Every SMTP submission used to take the database's write lock (SQLite's
BEGIN IMMEDIATE) for its own transaction and its own fsync; under ten
concurrent connections intake spent more than half its time queued on that
lock. Here one committer thread takes whatever units are waiting, runs
each in a savepoint of one shared transaction, and commits once. A unit
that raises is rolled back to its savepoint alone (its audit events with
it) and its caller gets the exception; the others commit. A caller gets
its result only after the commit: "250 only after the durable commit"
holds for every unit of the batch.

A caller may bound its wait (`run(work, timeout=...)`): when the store
cannot take the commit in time (another program holds SQLite's write lock,
a PostgreSQL table is locked), it gets `CommitTimeout` and answers 451. A
unit is *taken* only inside a transaction that already holds the write
lock; one the caller abandoned before that is never written, so a 451
never hides a stored document. Once taken, the unit's commit is a moment
away and the caller waits for it; on PostgreSQL `lock_timeout` bounds the
waits inside the transaction too.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from myhug.db.session import TRANSACTION_ATTEMPTS, Database, is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[Session], Any]
Savepoint = Callable[[Session], AbstractContextManager[None]]


class CommitTimeout(TimeoutError):
    """The store did not take the unit's commit within the caller's time limit; nothing of it was written."""


WAITING, TAKEN, ABANDONED = "waiting", "taken", "abandoned"


@dataclass
class _Unit:
    work: Work
    future: Future[Any] = field(default_factory=Future)
    races: int = 0  # times it lost an idempotency race (IntegrityError) and went round again
    # WAITING -> TAKEN (run inside a transaction holding the write lock) | ABANDONED (its caller gave up).
    state: str = WAITING
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        """Claim the unit for the transaction under way; False if its caller has given up."""
        with self.lock:
            if self.state == ABANDONED:
                return False
            self.state = TAKEN
            return True

    def untake(self) -> None:
        """The transaction that took it was rolled back: the unit waits again (and may be abandoned)."""
        with self.lock:
            if self.state == TAKEN:
                self.state = WAITING

    def abandon(self) -> bool:
        """The caller gives up; True if the unit was not taken, so it never will be."""
        with self.lock:
            if self.state == WAITING:
                self.state = ABANDONED
                return True
            return self.state == ABANDONED

    @property
    def abandoned(self) -> bool:
        return self.state == ABANDONED


class GroupCommit:
    """Runs units of work for any number of threads in shared transactions, on one committer thread.

    `savepoint(session)` opens each unit's nested transaction; it must undo
    whatever the unit left in the session besides rows (the audit trail's
    `savepoint` forgets the unit's pending events).
    """

    RACE_RETRIES = 3

    def __init__(self, db: Database, savepoint: Savepoint, max_batch: int = 32, name: str = "group-commit",
                 lock_timeout: float | None = None) -> None:
        self.db = db
        self.lock_timeout = lock_timeout  # PostgreSQL: the longest wait for a lock inside a transaction
        self.savepoint = savepoint
        self.max_batch = max_batch
        self.name = name
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def run(self, work: Callable[[Session], T], timeout: float | None = None) -> T:
        """`work(session)` committed (with whatever else is waiting); its result, or what it raised.

        With `timeout`, raises `CommitTimeout` if the store has not taken the
        commit within that many seconds; the unit is then never written.
        """
        unit = self._enqueue(work)
        if timeout is None:
            return cast(T, unit.future.result())
        deadline = time.monotonic() + timeout
        while True:
            try:
                return cast(T, unit.future.result(timeout=max(0.0, min(0.25, deadline - time.monotonic()))))
            except FutureTimeout:
                if time.monotonic() >= deadline and unit.abandon():
                    raise CommitTimeout(f"the database did not take the commit within {timeout:g} s") from None

    def submit(self, work: Work) -> Future[Any]:
        """Queue `work`; the future resolves after the commit that includes it."""
        return self._enqueue(work).future

    def _enqueue(self, work: Work) -> _Unit:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        unit = _Unit(work)
        self._queue.put(unit)
        return unit

    def close(self) -> None:
        """Commit what is queued, then stop the committer thread."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _loop(self) -> None:
        while True:
            unit = self._queue.get()
            if unit is None:
                return
            batch = [unit]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Unit]) -> None:
        taken: list[_Unit] = []

        def step(session: Session) -> list[tuple[_Unit, Any, BaseException | None]]:
            # BEGIN now: on SQLite this is where the write lock is waited for. Only then are units taken,
            # so that a caller who gave up meanwhile is never written.
            session.connection()
            if self.lock_timeout is not None and not self.db.is_sqlite:
                session.execute(text(f"SET LOCAL lock_timeout = {int(self.lock_timeout * 1000)}"))
            taken[:] = [unit for unit in batch if unit.take()]
            outcomes: list[tuple[_Unit, Any, BaseException | None]] = []  # afresh at each attempt
            for unit in taken:
                try:
                    with self.savepoint(session):
                        result = unit.work(session)
                        session.flush()
                except Exception as exc:
                    if is_transient(exc):
                        raise  # the whole transaction is lost: the batch is tried again
                    outcomes.append((unit, None, exc))
                else:
                    outcomes.append((unit, result, None))
            return outcomes

        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            if all(unit.abandoned for unit in batch):
                return
            try:
                outcomes = self.db.run(step, attempts=1)
                break
            except Exception as exc:  # noqa: BLE001  (any failure of the commit must reach every waiting caller)
                for unit in taken:
                    unit.untake()
                if attempt < TRANSACTION_ATTEMPTS and is_transient(exc):
                    log.info("group commit retried (%s), attempt %d of %d", type(exc).__name__, attempt + 1,
                             TRANSACTION_ATTEMPTS)
                    time.sleep(random.uniform(0.005, 0.05) * attempt)
                    continue
                log.error("group commit of %d units failed: %s", len(batch), type(exc).__name__)
                for unit in batch:
                    if not unit.abandoned:
                        unit.future.set_exception(exc)
                return
        for unit, result, error in outcomes:
            if error is None:
                unit.future.set_result(result)
            elif isinstance(error, IntegrityError) and unit.races < self.RACE_RETRIES:
                # Lost a uniqueness race to another process: next time round it sees the winner's row.
                unit.races += 1
                unit.untake()
                self._queue.put(unit)
            else:
                unit.future.set_exception(error)
