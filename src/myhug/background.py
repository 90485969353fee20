"""A background loop that runs a unit of work, then sleeps until woken or until the interval passes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)


class BackgroundLoop:
    """Subclasses implement `run_once`, returning how much work they did."""

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self, *_: object) -> None:
        """Look again at once (call from the event loop the task runs on)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run_once(self) -> int:
        raise NotImplementedError

    async def run(self, interval: float) -> None:
        while not self._stopping.is_set():
            try:
                done = await self.run_once()
            except Exception:  # a bug or an outage must not end the loop; the work stays queued
                log.exception("%s: unexpected error; retrying", type(self).__name__)
                done = 0
            if done:
                continue  # more may be waiting
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)


@contextlib.asynccontextmanager
async def heartbeat(renew: Callable[[], int], interval: float, name: str) -> AsyncIterator[None]:
    """Renew leases every `interval` seconds while the body runs.

    Leases are short so that the work of a crashed process (even `kill -9`) is
    taken again within seconds; while the process lives, its heartbeat keeps
    them, so a slow relay is never taken over by another worker.
    `renew` runs in a thread (it writes to the database); its errors are
    logged, never raised: a missed beat only lets a lease run out.
    """

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(renew)
            except Exception:
                log.exception("%s: could not renew leases", name)

    task = asyncio.create_task(beat(), name=f"{name}-heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
