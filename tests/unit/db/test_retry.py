"""The retry policy of transactions: transient database errors are retried at once, a bounded number of
times; anything else, or a transient error that persists, propagates (intake then answers 451)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from myhug.db.session import TRANSACTION_ATTEMPTS, Database, is_transient


class FakeDriverError(Exception):
    def __init__(self, sqlstate: str | None, text: str = "driver error") -> None:
        super().__init__(text)
        self.sqlstate = sqlstate


def deadlock() -> OperationalError:
    return OperationalError("UPDATE audit_head ...", {}, FakeDriverError("40P01", "deadlock detected"))


def serialization_failure() -> DBAPIError:
    return DBAPIError("SELECT ...", {}, FakeDriverError("40001"))


def lost_connection() -> OperationalError:
    return OperationalError("SELECT 1", {}, FakeDriverError(None, "server closed the connection"),
                            connection_invalidated=True)


def sqlite_busy() -> OperationalError:
    return OperationalError("BEGIN IMMEDIATE", {}, FakeDriverError(None, "database is locked"))


def unique_violation() -> IntegrityError:
    return IntegrityError("INSERT ...", {}, FakeDriverError("23505"))


@pytest.mark.parametrize("error", [deadlock, serialization_failure, lost_connection, sqlite_busy])
def test_transient_errors_are_recognised(error) -> None:  # type: ignore[no-untyped-def]
    assert is_transient(error())


@pytest.mark.parametrize("error", [unique_violation, lambda: ValueError("bug"),
                                   lambda: OperationalError("x", {}, FakeDriverError("42P01", "no such table"))])
def test_other_errors_are_not(error) -> None:  # type: ignore[no-untyped-def]
    assert not is_transient(error())


@pytest.fixture
def db(tmp_path) -> Database:  # type: ignore[no-untyped-def]
    return Database(f"sqlite:///{tmp_path / 'retry.db'}")


def flaky(errors: list[Exception]):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def work(session: Session) -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "done"

    return work, calls


def test_a_transient_error_is_retried_and_the_work_succeeds(db: Database) -> None:
    work, calls = flaky([deadlock(), lost_connection()])
    assert db.run(work) == "done" and len(calls) == 3


def test_a_persistent_transient_error_gives_up_after_the_bound(db: Database) -> None:
    work, calls = flaky([deadlock() for _ in range(10)])
    with pytest.raises(OperationalError):
        db.run(work)
    assert len(calls) == TRANSACTION_ATTEMPTS


def test_a_permanent_error_is_not_retried(db: Database) -> None:
    work, calls = flaky([unique_violation()])
    with pytest.raises(IntegrityError):
        db.run(work)
    assert len(calls) == 1


def test_the_caller_may_name_errors_a_retry_cures(db: Database) -> None:
    work, calls = flaky([unique_violation()])  # losing the idempotency race: the retry sees the winner
    assert db.run(work, also_retry=(IntegrityError,)) == "done" and len(calls) == 2
