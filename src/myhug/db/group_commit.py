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
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from myhug.db.session import Database, is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[Session], Any]
Savepoint = Callable[[Session], AbstractContextManager[None]]


@dataclass
class _Unit:
    work: Work
    future: Future[Any] = field(default_factory=Future)
    races: int = 0  # times it lost an idempotency race (IntegrityError) and went round again


class GroupCommit:
    """Runs units of work for any number of threads in shared transactions, on one committer thread.

    `savepoint(session)` opens each unit's nested transaction; it must undo
    whatever the unit left in the session besides rows (the audit trail's
    `savepoint` forgets the unit's pending events).
    """

    RACE_RETRIES = 3

    def __init__(self, db: Database, savepoint: Savepoint, max_batch: int = 32, name: str = "group-commit") -> None:
        self.db = db
        self.savepoint = savepoint
        self.max_batch = max_batch
        self.name = name
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def run(self, work: Callable[[Session], T]) -> T:
        """`work(session)` committed (with whatever else is waiting); its result, or what it raised."""
        return cast(T, self.submit(work).result())

    def submit(self, work: Work) -> Future[Any]:
        """Queue `work`; the future resolves after the commit that includes it."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        unit = _Unit(work)
        self._queue.put(unit)
        return unit.future

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
        def step(session: Session) -> list[tuple[_Unit, Any, BaseException | None]]:
            outcomes: list[tuple[_Unit, Any, BaseException | None]] = []  # afresh at each attempt
            for unit in batch:
                try:
                    with self.savepoint(session):
                        result = unit.work(session)
                        session.flush()
                except Exception as exc:
                    if is_transient(exc):
                        raise  # the whole transaction is lost: Database.run tries the batch again
                    outcomes.append((unit, None, exc))
                else:
                    outcomes.append((unit, result, None))
            return outcomes

        try:
            outcomes = self.db.run(step)
        except Exception as exc:  # noqa: BLE001  (any failure of the commit must reach every waiting caller)
            log.error("group commit of %d units failed: %s", len(batch), type(exc).__name__)
            for unit in batch:
                unit.future.set_exception(exc)
            return
        for unit, result, error in outcomes:
            if error is None:
                unit.future.set_result(result)
            elif isinstance(error, IntegrityError) and unit.races < self.RACE_RETRIES:
                # Lost a uniqueness race to another process: next time round it sees the winner's row.
                unit.races += 1
                self._queue.put(unit)
            else:
                unit.future.set_exception(error)
