"""Leases of the delivery queue: short, renewed while the work lives, never stolen from a live worker."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from myhug.components import Components
from myhug.db.base import utcnow
from myhug.delivery.models import Delivery
from myhug.delivery.queue import DeliveryQueue, transition
from myhug.delivery.states import DeliveryState
from myhug.delivery.worker import DeliveryWorker
from myhug.directory.service import DpiCredentials
from tests.conftest import Directory
from tests.helpers import accept_directly


def _queue_a_delivery(gateway: Components, dpi: DpiCredentials, directory: Directory) -> str:
    doctor = directory.hosted(consents=("P-1001",))
    accepted = accept_directly(gateway, doctor.address)
    with gateway.db.reading() as session:
        return session.query(Delivery.id).filter(Delivery.submission_id == accepted.submission_id).scalar()


def _expire_leases(gateway: Components) -> None:
    with gateway.db.transaction() as session:
        session.execute(update(Delivery).values(lease_until=utcnow() - timedelta(seconds=1)))


def test_a_renewed_lease_is_not_taken_and_a_dead_workers_lease_is(
    gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    delivery_id = _queue_a_delivery(gateway, dpi, directory)
    alive = DeliveryQueue(gateway.db, gateway.settings.queue, "alive")
    other = DeliveryQueue(gateway.db, gateway.settings.queue, "other")
    assert alive.claim() == [delivery_id]
    assert other.claim() == []  # leased
    _expire_leases(gateway)  # the lease time has passed...
    assert alive.renew_mine([]) == 0  # a heartbeat renews only the deliveries in flight...
    assert alive.renew_mine([delivery_id]) == 1  # ...and the live worker's came first
    assert other.claim() == []
    _expire_leases(gateway)  # no heartbeat: the worker died
    assert other.claim() == [delivery_id]
    with gateway.db.reading() as session:
        assert session.get(Delivery, delivery_id).lease_owner == "other"  # type: ignore[union-attr]


class SlowAgent:
    """A fake agent whose delivery outlasts several lease periods."""

    route = "hosted"

    def __init__(self, queue: DeliveryQueue, seconds: float) -> None:
        self.queue, self.seconds, self.done = queue, seconds, asyncio.Event()

    async def deliver(self, delivery_id: str) -> None:
        await asyncio.sleep(self.seconds)
        with self.queue.db.transaction() as session:
            delivery = self.queue.leased(session, delivery_id)
            assert delivery is not None, "the lease was lost during a live delivery"
            transition(session, delivery, DeliveryState.DEPOSITED, actor="test")
        self.done.set()


async def test_a_worker_keeps_its_lease_by_heartbeat_through_a_delivery_longer_than_the_lease(
    gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    delivery_id = _queue_a_delivery(gateway, dpi, directory)
    gateway.settings.queue.lease_seconds = 3
    queue = DeliveryQueue(gateway.db, gateway.settings.queue, "worker-a")
    agent = SlowAgent(queue, seconds=7.0)  # more than two lease periods
    worker = DeliveryWorker(queue, {"hosted": agent})  # type: ignore[dict-item]
    task = asyncio.create_task(worker.run(0.05))
    rival = DeliveryQueue(gateway.db, gateway.settings.queue, "worker-b")
    try:
        for _ in range(12):  # every half second during the delivery, a rival tries to take it
            await asyncio.sleep(0.5)
            assert await asyncio.to_thread(rival.claim) == [], "a live worker's lease was stolen"
        await asyncio.wait_for(agent.done.wait(), 10)
    finally:
        worker.stop()
        await task
    with gateway.db.reading() as session:
        assert session.get(Delivery, delivery_id).state == "deposited"  # type: ignore[union-attr]


class RecordingFails(DeliveryQueue):
    """A queue on a full disk: the outcome of a delivery cannot be recorded; nor, maybe, the lease given back."""

    def __init__(self, *args: object, release_works: bool) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.release_works = release_works

    def defer(self, delivery_id: str, reason: str) -> None:
        raise OSError(28, "No space left on device")

    def release(self, delivery_id: str) -> int:
        if not self.release_works:
            raise OSError(28, "No space left on device")
        return super().release(delivery_id)


class RelayDown:
    route = "hosted"

    async def deliver(self, delivery_id: str) -> None:
        from myhug.errors import TemporaryFailure

        raise TemporaryFailure("relay down")


async def test_a_delivery_whose_outcome_could_not_be_recorded_is_no_longer_renewed_and_is_taken_again(
    gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    delivery_id = _queue_a_delivery(gateway, dpi, directory)
    queue = RecordingFails(gateway.db, gateway.settings.queue, "worker-a", release_works=False)
    worker = DeliveryWorker(queue, {"hosted": RelayDown()})  # type: ignore[dict-item]
    assert await worker.run_once() == 1
    assert worker.in_flight() == frozenset()
    assert worker.renew() == 0  # the heartbeat keeps nothing it no longer works on
    rival = DeliveryQueue(gateway.db, gateway.settings.queue, "worker-b")
    assert rival.claim() == []  # the lease still runs...
    _expire_leases(gateway)
    assert rival.claim() == [delivery_id]  # ...out, and another worker takes it


async def test_a_delivery_whose_outcome_could_not_be_recorded_is_given_back_at_once_when_possible(
    gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    delivery_id = _queue_a_delivery(gateway, dpi, directory)
    queue = RecordingFails(gateway.db, gateway.settings.queue, "worker-a", release_works=True)
    worker = DeliveryWorker(queue, {"hosted": RelayDown()})  # type: ignore[dict-item]
    assert await worker.run_once() == 1
    rival = DeliveryQueue(gateway.db, gateway.settings.queue, "worker-b")
    assert rival.claim() == [delivery_id]
