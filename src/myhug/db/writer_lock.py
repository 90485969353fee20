"""One writer at a time on SQLite, with the next writer woken at once instead of polling.

SQLite has a single writer. A connection that finds the write lock taken
calls its busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50,
50, 100 ms between tries and is not woken when the lock is freed. Under
load the intake's committer and the delivery workers' transactions collide
all the time, so a writer that waited for a 2 ms transaction often slept
10 ms or more. The write lock was held about 80 % of the time on the hosted
route, and the processes were mostly idle.

`WriterLock` queues the writers in the kernel instead. It is an `flock` on
a file next to the database, taken before `BEGIN IMMEDIATE` and let go after
the commit or rollback. It works across processes and threads: each
acquisition opens its own file description, and an `flock` belongs to the
description. The kernel wakes a waiter as soon as the holder lets go, and
frees the lock of a process that dies. A thread lock in front of it keeps a
process's own threads from queueing in the kernel one by one.

A waiter that gets no lock within `timeout` seconds raises
`WriterLockTimeout`. `Database.run` treats it as transient, like SQLite's
"database is locked" after its busy timeout, so a stuck writer gives 451s
rather than hung sessions. `flock` itself has no timeout, so a contended wait
runs in a helper thread (see `_wait`). SQLite's own lock stays underneath:
a process that does not take this lock (`sqlite3` by hand, the migrations)
is still safe, only served by the busy handler.

The SMTP intake goes first (`prioritize`). A DPI waits on the line for its
250, while a delivery can wait a moment: under load the intake's committer
spent two thirds of its time queued behind the workers' transactions. A
prioritized writer holds a shared `flock` on a second file (`…-gate`) while
it waits for the write lock; any other writer first takes that file
exclusively, which waits until no prioritized writer is waiting, lets it go
at once, then queues for the write lock. So a worker yields to the intake
waiting now, never to one that comes later, and never holds the gate while
it waits for the write lock: no cycle. Its wait at the gate counts against
the same timeout.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class WriterLockTimeout(TimeoutError):
    """The write lock stayed taken for longer than the timeout (another writer is stuck)."""


class WriterLock:
    """Mutual exclusion of write transactions on one SQLite file, for every process that uses this lock."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.gate_path = f"{path}-gate"
        self.timeout = timeout
        self.prioritized = False  # see `prioritize`
        self._threads = threading.Lock()
        self._held = threading.local()
        self._unusable = False

    def prioritize(self) -> None:
        """From now on this process's writers go before the others' (the SMTP intake's, see the module doc)."""
        self.prioritized = True

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block; a thread that already holds it goes straight in."""
        if getattr(self._held, "depth", 0) or self._unusable:
            # Nested in this thread (SQLite itself refuses a second writer, as it always did),
            # or no lock file can be opened: SQLite's own lock and busy handler serve alone.
            yield
            return
        deadline = time.monotonic() + self.timeout
        if not self._threads.acquire(timeout=self.timeout):
            raise WriterLockTimeout(f"no write lock on {self.path} within {self.timeout:g} s (in this process)")
        try:
            fd = self._open(self.path)
            if fd is None:
                yield
                return
            try:
                self._take_turn(fd, deadline)
                self._held.depth = 1
                try:
                    yield
                finally:
                    self._held.depth = 0
            finally:
                os.close(fd)  # the description's last descriptor: the flock goes with it
        finally:
            self._threads.release()

    def _open(self, path: str) -> int | None:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._unusable = True
            log.warning("cannot open the writers' lock %s (%s): SQLite's busy handler serves alone", path,
                        exc.strerror)
            return None

    def _take_turn(self, fd: int, deadline: float) -> None:
        """Take the write lock through `fd`: a prioritized writer waits at the gate, another lets it pass first."""
        try:
            gate = os.open(self.gate_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            gate = -1  # no priority then, but still one writer at a time
        if gate < 0:
            self._lock(fd, fcntl.LOCK_EX, deadline, self.path)
            return
        try:
            # Shared: the prioritized writers waiting now. Exclusive: wait until there are none.
            self._lock(gate, fcntl.LOCK_SH if self.prioritized else fcntl.LOCK_EX, deadline, self.gate_path)
            if not self.prioritized:
                os.close(gate)  # through the gate; holding it while queueing would block the intake
                gate = -1
            self._lock(fd, fcntl.LOCK_EX, deadline, self.path)
        finally:
            if gate >= 0:
                os.close(gate)

    def _lock(self, fd: int, mode: int, deadline: float, path: str) -> None:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if not self._wait(fd, mode, deadline - time.monotonic()):
            raise WriterLockTimeout(f"no write lock on {path} within {self.timeout:g} s")

    @staticmethod
    def _wait(fd: int, mode: int, timeout: float) -> bool:
        """Block on the lock for at most `timeout` seconds; True once it is held through `fd`.

        A helper thread blocks in `flock` on a duplicate of `fd` (the same
        description, so the same lock) and closes its duplicate when it gets
        the lock. A caller that gives up closes `fd`; the helper's late lock
        then dies with the description when it closes its duplicate.
        """
        duplicate = os.dup(fd)
        acquired = threading.Event()

        def wait() -> None:
            try:
                fcntl.flock(duplicate, mode)
                acquired.set()
            finally:
                os.close(duplicate)

        threading.Thread(target=wait, name="writer-lock-wait", daemon=True).start()
        return acquired.wait(max(timeout, 0.0))
