"""The SQLite writers' lock: one holder across processes and threads, woken waiters, a bounded wait."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from myhug.db.session import Database, is_transient
from myhug.db.writer_lock import WriterLock, WriterLockTimeout

HOLDER = """
import sys
from myhug.db.writer_lock import WriterLock
with WriterLock(sys.argv[1], 5).held():
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@contextmanager
def held_by_another_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process holding the lock until its stdin says so (or until it is killed)."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        if child.poll() is None:
            child.kill()  # by its id: only the process this test started
        child.wait(10)


def test_another_process_holding_it_makes_a_writer_wait_until_it_lets_go(tmp_path: Path) -> None:
    lock = WriterLock(str(tmp_path / "db-writer"), timeout=10)
    got = threading.Event()

    def writer() -> None:
        with lock.held():
            got.set()

    with held_by_another_process(tmp_path / "db-writer") as child:
        thread = threading.Thread(target=writer)
        thread.start()
        assert not got.wait(0.3), "the writer went in while another process held the lock"
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert got.wait(10), "the writer was not woken when the lock was let go"
        thread.join(10)


def test_a_wait_longer_than_the_timeout_is_a_transient_error_and_leaks_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "db-writer"
    with held_by_another_process(path) as child:
        with pytest.raises(WriterLockTimeout) as caught, WriterLock(str(path), timeout=0.2).held():
            pass
        assert is_transient(caught.value)  # Database.run tries again; the SMTP edge answers 451 at worst
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout is not None and child.stdout.readline().strip() == "released"
    # The abandoned wait's helper got the lock late and let it go: the next writer goes in.
    entered = False
    with WriterLock(str(path), timeout=5).held():
        entered = True
    assert entered


def test_a_holder_that_dies_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "db-writer"
    with held_by_another_process(path) as child:
        child.kill()
        child.wait(10)
        with WriterLock(str(path), timeout=5).held():
            pass  # no WriterLockTimeout: the kernel let go of the dead process's lock


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    lock = WriterLock(str(tmp_path / "db-writer"), timeout=10)
    inside, most = 0, 0
    guard = threading.Lock()

    def writer() -> None:
        nonlocal inside, most
        for _ in range(50):
            with lock.held():
                with guard:
                    inside += 1
                    most = max(most, inside)
                threading.Event().wait(0.0005)  # stay inside a moment, so overlaps would show
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most == 1


def test_a_thread_already_holding_it_goes_straight_in(tmp_path: Path) -> None:
    lock = WriterLock(str(tmp_path / "db-writer"), timeout=0.5)
    with lock.held(), lock.held():
        pass  # no self-deadlock and no timeout


def test_an_unopenable_lock_file_leaves_sqlite_to_serialise_alone(tmp_path: Path) -> None:
    lock = WriterLock(str(tmp_path / "missing-directory" / "db-writer"), timeout=0.5)
    with lock.held():
        pass
    with lock.held():
        pass


def test_a_sqlite_database_takes_the_lock_for_each_write_transaction(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'myhug.db'}")
    try:
        with db.transaction() as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
        with held_by_another_process(tmp_path / "myhug.db-writer") as child:
            done = threading.Event()

            def write() -> None:
                with db.transaction() as session:
                    session.execute(text("INSERT INTO t VALUES (1)"))
                done.set()

            thread = threading.Thread(target=write)
            thread.start()
            assert not done.wait(0.3), "a write transaction began without the writers' lock"
            with db.reading() as session:  # readers never wait for it
                assert session.scalar(text("SELECT count(*) FROM t")) == 0
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
            assert done.wait(10)
            thread.join(10)
        with db.reading() as session:
            assert session.scalar(text("SELECT count(*) FROM t")) == 1
    finally:
        db.dispose()


def intake_waiting(path: Path) -> bool:
    """Whether a prioritized writer holds its shared place at the gate (an exclusive try fails)."""
    gate = os.open(f"{path}-gate", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(gate)  # a lock taken by the try goes with it
    return False


def test_a_writer_yields_to_a_prioritized_one_already_waiting_and_the_gate_holds_nothing_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db-writer"
    for _ in range(5):
        intake, worker = WriterLock(str(path), timeout=10), WriterLock(str(path), timeout=10)
        intake.prioritize()
        order: list[str] = []

        def write(lock: WriterLock, name: str, order: list[str] = order) -> None:
            with lock.held():
                order.append(name)

        with held_by_another_process(path) as child:
            first = threading.Thread(target=write, args=(intake, "intake"))
            first.start()
            deadline = time.monotonic() + 10
            while not intake_waiting(path):
                assert time.monotonic() < deadline, "the prioritized writer never took its place at the gate"
                time.sleep(0.01)
            second = threading.Thread(target=write, args=(worker, "worker"))
            second.start()
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
            first.join(10)
            second.join(10)
        assert order == ["intake", "worker"]
    # Nobody waits: an ordinary writer passes the gate at once.
    entered = False
    with WriterLock(str(path), timeout=1).held():
        entered = True
    assert entered
