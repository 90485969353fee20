"""Cooperating processes, Postfix-style: `myhug serve` starts N `--role worker` children, and SMTP intake ones.

One Python process does its delivery work on one core (the GIL); the
workers share the queue through the database's leases (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so several processes
simply take turns at the work. The parent keeps the SMTP intake and the web
server; when it accepts a document it wakes one child (SIGUSR1, in turn), so
a new document does not wait for a poll. A child that dies is started again,
with a back-off; at shutdown each child gets SIGTERM, by its process id, and
SIGKILL only if it has not stopped in time. A child whose parent dies (even
by SIGKILL) gets SIGTERM from the kernel and stops too: no orphan keeps
polling the queue or accepting on an inherited port.

The same pool runs the extra SMTP intake processes (`smtp.processes`): they
accept submissions on the parent's address (SO_REUSEPORT), and wake the
parent (SIGUSR1) when they accept a document, which wakes a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
STOP_TIMEOUT = 40.0
PARENT_ENV = "MYHUG_PARENT_PID"  # set in each child: the `myhug serve` it belongs to
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> int | None:
    """In a pool's child: have the kernel send SIGTERM when the parent dies; its pid, or None if not a child."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("could not ask to be stopped with the parent (prctl errno %d)", ctypes.get_errno())
    if os.getppid() != int(parent):  # it died before the prctl: nobody would signal it
        os.kill(os.getpid(), signal.SIGTERM)
    return int(parent)


def parent_waker(parent: int) -> Callable[[], None]:
    """An intake process's wake-up: SIGUSR1 to the `myhug serve` that started it, which wakes a worker."""
    def wake() -> None:
        if os.getppid() == parent:  # never a stray signal to whoever adopted an orphan
            with contextlib.suppress(ProcessLookupError):
                os.kill(parent, signal.SIGUSR1)
    return wake


def default_worker_count() -> int:
    """As many delivery processes as the machine has cores (at least one)."""
    return max(1, os.cpu_count() or 1)


class WorkerPool:
    """Starts, watches, wakes and stops the worker children."""

    def __init__(self, command: Sequence[str], count: int, kind: str = "delivery worker") -> None:
        self.command = list(command)
        self.count = count
        self.kind = kind
        self.env: dict[str, str] = {}  # added to each child's environment
        self.processes: list[asyncio.subprocess.Process | None] = [None] * count
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._next = 0

    async def start(self) -> None:
        for slot in range(self.count):
            self._watchers.append(asyncio.create_task(self._keep(slot), name=f"worker-{slot}"))
        log.info("started %d %s processes", self.count, self.kind)

    async def _keep(self, slot: int) -> None:
        """Run one child for good: start it, wait for it, start it again after a pause if it died."""
        failures = 0
        while not self._stopping:
            process = await asyncio.create_subprocess_exec(
                *self.command, env={**os.environ, **self.env, PARENT_ENV: str(os.getpid())})
            self.processes[slot] = process
            log.info("%s %d running as pid %d", self.kind, slot, process.pid)
            code = await process.wait()
            if self._stopping:
                return
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            failures += 1
            log.warning("%s %d (pid %d) exited with %s; starting it again in %.0f s", self.kind, slot, process.pid,
                        code, delay)
            await asyncio.sleep(delay)

    def wake(self) -> None:
        """A document was accepted: nudge one live child (in turn) to look at the queue now."""
        for _ in range(self.count):
            process = self.processes[self._next % self.count]
            self._next += 1
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGUSR1)
                return

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p is not None and p.returncode is None]

    async def stop(self) -> None:
        """SIGTERM each child by pid (each finishes its leases), SIGKILL the ones still there after the timeout."""
        self._stopping = True
        live = [p for p in self.processes if p is not None and p.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        if live:
            _, pending = await asyncio.wait([asyncio.create_task(p.wait()) for p in live], timeout=STOP_TIMEOUT)
            if pending:
                for process in live:
                    if process.returncode is None:
                        log.warning("%s pid %d did not stop in %.0f s; killing it", self.kind, process.pid,
                                    STOP_TIMEOUT)
                        with contextlib.suppress(ProcessLookupError):
                            process.kill()
                await asyncio.gather(*(p.wait() for p in live), return_exceptions=True)
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
