"""The delivery worker: leases due deliveries and hands each to its route's agent."""

from __future__ import annotations

import asyncio
import logging
import threading

from myhug.background import BackgroundLoop, heartbeat
from myhug.delivery.agents import DeliveryAgent
from myhug.delivery.queue import DeliveryQueue
from myhug.errors import PermanentFailure, TemporaryFailure

log = logging.getLogger(__name__)


class DeliveryWorker(BackgroundLoop):
    """Runs until `stop()`; `wake()` makes it look at the queue at once (after an intake commit)."""

    def __init__(self, queue: DeliveryQueue, agents: dict[str, DeliveryAgent], concurrency: int = 8) -> None:
        super().__init__()
        self.queue = queue
        self.agents = agents
        self.concurrency = concurrency
        # The deliveries in this worker's hands: the only leases its heartbeat keeps. Read by the
        # heartbeat's thread, changed on the event loop: the lock guards the copy.
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()

    def in_flight(self) -> frozenset[str]:
        """The deliveries being worked on now."""
        with self._in_flight_lock:
            return frozenset(self._in_flight)

    def renew(self) -> int:
        """The heartbeat's unit: renew the leases of the deliveries in flight, and those only."""
        return self.queue.renew_mine(self.in_flight())

    async def run(self, interval: float | None = None) -> None:
        log.info("delivery worker %s started (routes: %s)", self.queue.owner, ", ".join(sorted(self.agents)))
        try:
            async with heartbeat(self.renew, self.queue.settings.lease_seconds / 3, "delivery-worker"):
                await super().run(interval or self.queue.settings.poll_interval)
        finally:
            await asyncio.to_thread(self.queue.outcomes.close)  # what is queued is committed first
            released = await asyncio.to_thread(self.queue.release_mine)
            log.info("delivery worker %s stopped (%d leases released)", self.queue.owner, released)

    async def run_once(self) -> int:
        """Claim one batch and process it; returns how many deliveries were tried."""
        ids = await asyncio.to_thread(self.queue.claim, self.concurrency)
        with self._in_flight_lock:
            self._in_flight.update(ids)
        try:
            outcomes = await asyncio.gather(*(self._process(i) for i in ids), return_exceptions=True)
        finally:
            with self._in_flight_lock:
                self._in_flight.difference_update(ids)
        for delivery_id, outcome in zip(ids, outcomes, strict=True):
            if isinstance(outcome, Exception):
                # Even recording the outcome failed (the database is down, the disk full): the delivery has
                # left this worker's hands. Its lease is given back, or, if even that fails, no longer
                # renewed, so it runs out and any worker takes the delivery again within a lease period.
                # Nothing escapes the loop, and no sibling is abandoned.
                log.error("delivery %s: could not record its outcome: %s", delivery_id, outcome, exc_info=outcome)
                try:
                    await asyncio.to_thread(self.queue.release, delivery_id)
                except Exception as exc:  # noqa: BLE001  (the lease then runs out on its own)
                    log.warning("delivery %s: lease not given back (%s); it runs out", delivery_id,
                                type(exc).__name__)
        return len(ids)

    async def _process(self, delivery_id: str) -> None:
        inspection = await asyncio.to_thread(self.queue.inspect, delivery_id)
        if inspection is None:
            return
        route = inspection.route
        if inspection.obstacle is not None:
            verdict, reason = inspection.obstacle
            await asyncio.to_thread(self.queue.fail if verdict == "fail" else self.queue.hold, delivery_id, reason)
            return
        agent = self.agents.get(route)
        if agent is None:
            await asyncio.to_thread(self.queue.hold, delivery_id, f"no delivery agent for route {route!r} in this process")
            return
        try:
            await agent.deliver(delivery_id)
        except PermanentFailure as exc:
            log.warning("delivery %s failed: %s", delivery_id, exc)
            await asyncio.to_thread(self.queue.fail, delivery_id, str(exc))
        except TemporaryFailure as exc:
            log.info("delivery %s deferred: %s", delivery_id, exc)
            await asyncio.to_thread(self.queue.defer, delivery_id, str(exc))
        except Exception as exc:  # an unexpected fault is retried, never dropped
            log.exception("delivery %s: unexpected error, deferring", delivery_id)
            await asyncio.to_thread(self.queue.defer, delivery_id, f"internal error ({type(exc).__name__})")
