"""Group commit on the real database: many callers, few transactions, each unit all or nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from myhug.audit.models import AuditEvent
from myhug.audit.trail import record, savepoint, verify
from myhug.components import Components
from myhug.db.group_commit import GroupCommit


def refusal(n: int):  # type: ignore[no-untyped-def]
    def work(session: Session) -> int:
        record(session, "refused", actor=f"test:{n}", outcome="refused", detail={"n": n})
        return n

    return work


def queued_behind(commits: GroupCommit, first: Callable[[Session], object],
                  units: list[Callable[[Session], object]]) -> tuple[object, list[object]]:
    """Run `first` and hold the committer in it until every unit has queued, so that they share commits.

    Returns `first`'s result and the units' results, in order.
    """
    started, release = threading.Event(), threading.Event()

    def block(session: Session) -> object:
        result = first(session)
        started.set()
        release.wait(10)
        return result

    blocker = commits.submit(block)
    assert started.wait(10)
    with ThreadPoolExecutor(len(units)) as pool:
        futures = [pool.submit(commits.run, unit) for unit in units]
        deadline = time.monotonic() + 10
        while commits._queue.qsize() < len(units) and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        results = [f.result(timeout=30) for f in futures]
    return blocker.result(timeout=10), results


def count(gateway: Components) -> int:
    with gateway.db.reading() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def test_many_callers_share_few_commits_and_each_result_follows_its_commit(gateway: Components) -> None:
    commits = GroupCommit(gateway.db, savepoint)
    committed: list[int] = []

    def on_commit(connection: object) -> None:  # the database's COMMIT, not a savepoint's release
        committed.append(1)

    event.listen(gateway.db.engine, "commit", on_commit)
    try:
        before = count(gateway)
        # The first unit holds the committer until every caller has queued: they must share the next commits.
        first, results = queued_behind(commits, lambda session: True, [refusal(n) for n in range(40)])
        assert first is True
    finally:
        event.remove(gateway.db.engine, "commit", on_commit)
        commits.close()
    assert results == list(range(40))
    assert count(gateway) == before + 40  # visible to another connection once run() returned
    # The blocker's, then 40 units in batches of at most 32: three commits (a fourth is the first count).
    assert len(committed) <= 4, f"{len(committed)} commits for 41 units"
    with gateway.db.reading() as session:
        assert verify(session).ok


def test_a_failing_unit_is_rolled_back_alone_with_its_audit_events(gateway: Components) -> None:
    commits = GroupCommit(gateway.db, savepoint)
    release = threading.Event()

    def broken(session: Session) -> None:
        record(session, "refused", actor="test:broken", outcome="refused")
        raise ValueError("broken unit")

    try:
        before = count(gateway)
        commits.submit(lambda session: release.wait(10))
        good, bad, good_too = commits.submit(refusal(1)), commits.submit(broken), commits.submit(refusal(2))
        release.set()
        assert good.result(timeout=10) == 1 and good_too.result(timeout=10) == 2
        with pytest.raises(ValueError, match="broken unit"):
            bad.result(timeout=10)
    finally:
        commits.close()
    assert count(gateway) == before + 2
    with gateway.db.reading() as session:
        actors = set(session.scalars(select(AuditEvent.actor)))
        assert "test:broken" not in actors and {"test:1", "test:2"} <= actors
        assert verify(session).ok


def test_a_unit_that_loses_a_uniqueness_race_goes_round_again(gateway: Components) -> None:
    commits = GroupCommit(gateway.db, savepoint)
    tries = []

    def racing(session: Session) -> str:
        tries.append(1)
        if len(tries) == 1:
            raise IntegrityError("INSERT", {}, Exception("duplicate key"))
        return "second time round"

    try:
        assert commits.run(racing) == "second time round"
    finally:
        commits.close()
    assert len(tries) == 2


def test_when_the_commit_fails_every_caller_hears_it(gateway: Components, monkeypatch: pytest.MonkeyPatch) -> None:
    commits = GroupCommit(gateway.db, savepoint)

    def fail(work, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    monkeypatch.setattr(gateway.db, "run", fail)
    try:
        futures = [commits.submit(refusal(n)) for n in range(3)]
        for future in futures:
            with pytest.raises(RuntimeError, match="disk full"):
                future.result(timeout=10)
    finally:
        commits.close()


def test_the_units_events_are_chained_once_per_commit_not_once_per_unit(gateway: Components) -> None:
    """The trail's head is locked and moved once for the whole group, at the outer commit."""
    commits = GroupCommit(gateway.db, savepoint)
    head_updates: list[str] = []

    def on_execute(conn, cursor, statement: str, *args: object) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE AUDIT_HEAD"):
            head_updates.append(statement)

    def first(session: Session) -> None:
        record(session, "refused", actor="test:first", outcome="refused")

    event.listen(gateway.db.engine, "before_cursor_execute", on_execute)
    try:
        before = count(gateway)
        _, results = queued_behind(commits, first, [refusal(n) for n in range(5)])
        assert results == list(range(5))
    finally:
        event.remove(gateway.db.engine, "before_cursor_execute", on_execute)
        commits.close()
    assert count(gateway) == before + 6
    # Two commits at most (the blocker's group, then the five queued behind it): one head update each.
    assert 1 <= len(head_updates) <= 2, head_updates
    with gateway.db.reading() as session:
        assert verify(session).ok
