"""Engine creation and the transaction boundary.

`Database.transaction()` is the one place that begins and commits. Callers
receive a `Session`, do their work, and the commit happens when the block
exits without an exception; the SMTP edge answers 250 only after that.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from myhug.db.writer_lock import WriterLock, WriterLockTimeout

T = TypeVar("T")
READ_ONLY = "myhug.read_only"
log = logging.getLogger(__name__)

# SQLSTATEs that mean "the same transaction may succeed if run again now".
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
TRANSACTION_ATTEMPTS = 4
SQLITE_BUSY_SECONDS = 30


def is_transient(exc: BaseException) -> bool:
    """True for a database error that a retry of the whole transaction can cure.

    A deadlock or serialization failure (PostgreSQL), a connection lost or
    reset (the pool marks it invalidated), and SQLite's "database is locked"
    past its busy timeout. Constraint violations and programming errors are not.
    """
    if isinstance(exc, WriterLockTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with durable settings: on SQLite WAL, synchronous=FULL and BEGIN IMMEDIATE."""
    # hide_parameters: database errors end up in logs, and their bound values must not.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS}, **kwargs)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that
        # reads and then writes fails with SQLITE_BUSY under concurrency instead
        # of waiting for busy_timeout. Read-only transactions need no lock at
        # all in WAL mode, so they begin deferred and never wait for writers.
        connection.exec_driver_sql("BEGIN" if connection.info.get(READ_ONLY) else "BEGIN IMMEDIATE")


class Database:
    """Owns the engine and hands out transactions."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        database = self.engine.url.database if self.is_sqlite else None
        # Writers queue on a lock that wakes them (see `writer_lock`); an in-memory database has one process.
        self._writers = WriterLock(f"{database}-writer", SQLITE_BUSY_SECONDS) \
            if database and database != ":memory:" and not database.startswith("file:") else None

    def prioritize_writes(self) -> None:
        """This process's writers go before the other processes' on SQLite (the SMTP intake; see `writer_lock`)."""
        if self._writers is not None:
            self._writers.prioritize()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on any error.

        On SQLite it first takes the writers' lock (`db.writer_lock`), so that
        concurrent writers queue and are woken in turn instead of polling.
        """
        writers = self._writers.held() if self._writers is not None else nullcontext()
        with writers, self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it takes no write lock, so it never queues behind writers."""
        if not self.is_sqlite:
            with self.transaction() as session:
                yield session
            return
        with self.engine.connect() as connection:
            connection.info[READ_ONLY] = True  # read by the "begin" listener
            try:
                with Session(bind=connection, expire_on_commit=False) as session, session.begin():
                    yield session
            finally:
                connection.info.pop(READ_ONLY, None)

    def run(self, work: Callable[[Session], T], *, also_retry: tuple[type[Exception], ...] = (),
            attempts: int = TRANSACTION_ATTEMPTS) -> T:
        """`work` in one transaction, run again at once (after a short jitter) on a transient error.

        `work` must do nothing outside the database that a retry would repeat.
        After `attempts` tries, or on any other error, the error propagates:
        the SMTP edge answers 451, a worker defers. `also_retry` adds errors
        the caller knows a retry cures (e.g. losing an idempotency race).
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as session:
                    return work(session)
            except Exception as exc:
                if attempt == attempts or not (is_transient(exc) or isinstance(exc, also_retry)):
                    raise
                log.info("transaction retried (%s), attempt %d of %d", type(exc).__name__, attempt + 1, attempts)
                time.sleep(random.uniform(0.005, 0.05) * attempt)  # jitter: the rival transaction finishes first
        raise AssertionError("unreachable")

    def run_keeping_refusal(self, work: Callable[[Session], T], refusals: tuple[type[Exception], ...]) -> T:
        """Run `work` in a transaction that commits even when `work` raises one of `refusals`.

        A refused login or a denied document raises after recording failure
        counters and audit events; those records must survive the refusal,
        which is re-raised once they are committed.
        """
        refusal: Exception | None = None
        with self.transaction() as session:
            try:
                return work(session)
            except refusals as exc:
                refusal = exc
        assert refusal is not None
        raise refusal

    def dispose(self) -> None:
        self.engine.dispose()
