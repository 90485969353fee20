"""The delivery worker's verdicts, on a fake queue and fake agents: what each outcome of an agent does."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from myhug.config.settings import QueueSettings
from myhug.delivery.queue import Inspection
from myhug.delivery.worker import DeliveryWorker
from myhug.errors import PermanentFailure, TemporaryFailure


@dataclass
class FakeQueue:
    """The part of `DeliveryQueue` the worker uses, recording what it is told."""

    routes: dict[str, str]
    obstacles: dict[str, tuple[str, str]] = field(default_factory=dict)
    settings: QueueSettings = field(default_factory=lambda: QueueSettings(lease_seconds=30))
    owner: str = "fake"
    told: list[tuple[str, str, str]] = field(default_factory=list)
    due: list[str] = field(default_factory=list)

    def claim(self, limit: int = 20) -> list[str]:
        taken, self.due = self.due[:limit], self.due[limit:]
        return taken

    def inspect(self, delivery_id: str) -> Inspection | None:
        route = self.routes.get(delivery_id)
        return Inspection(route, self.obstacles.get(delivery_id)) if route is not None else None

    def fail(self, delivery_id: str, reason: str) -> None:
        self.told.append(("fail", delivery_id, reason))

    def defer(self, delivery_id: str, reason: str) -> None:
        self.told.append(("defer", delivery_id, reason))

    def hold(self, delivery_id: str, reason: str) -> None:
        self.told.append(("hold", delivery_id, reason))

    def renew_mine(self, in_flight: object) -> int:
        return 0

    def release(self, delivery_id: str) -> int:
        self.told.append(("release", delivery_id, ""))
        return 1

    def release_mine(self) -> int:
        return 0


class FakeAgent:
    route = "hosted"

    def __init__(self, outcome: Exception | None) -> None:
        self.outcome = outcome
        self.delivered: list[str] = []

    async def deliver(self, delivery_id: str, fallback_reason: str | None = None) -> None:
        if self.outcome is not None:
            raise self.outcome
        self.delivered.append(delivery_id)

    def withdraw(self, session: object, delivery: object, reason: str | None = None) -> dict[str, object]:
        return {}


async def _one(queue: FakeQueue, agent: FakeAgent) -> None:
    queue.due = ["D1"]
    worker = DeliveryWorker(queue, {"hosted": agent})  # type: ignore[arg-type, dict-item]
    assert await worker.run_once() == 1


@pytest.mark.parametrize(("outcome", "verdict", "reason"), [
    (PermanentFailure("recipient unknown"), "fail", "recipient unknown"),
    (TemporaryFailure("relay down"), "defer", "relay down"),
    (RuntimeError("a bug"), "defer", "internal error (RuntimeError)"),  # never dropped: retried
])
async def test_an_agents_failure_is_the_queues_verdict(outcome: Exception, verdict: str, reason: str) -> None:
    queue = FakeQueue({"D1": "hosted"})
    await _one(queue, FakeAgent(outcome))
    assert queue.told == [(verdict, "D1", reason)]


async def test_a_delivered_document_leaves_the_verdict_to_the_agent() -> None:
    queue, agent = FakeQueue({"D1": "hosted"}), FakeAgent(None)
    await _one(queue, agent)
    assert agent.delivered == ["D1"] and queue.told == []


@pytest.mark.parametrize("verdict", ["fail", "hold"])
async def test_an_obstacle_found_before_delivery_is_applied_and_nothing_is_sent(verdict: str) -> None:
    queue, agent = FakeQueue({"D1": "hosted"}, obstacles={"D1": (verdict, "consent withdrawn")}), FakeAgent(None)
    await _one(queue, agent)
    assert queue.told == [(verdict, "D1", "consent withdrawn")] and agent.delivered == []


async def test_a_route_without_an_agent_in_this_process_is_held() -> None:
    queue = FakeQueue({"D1": "hin"})
    await _one(queue, FakeAgent(None))
    assert queue.told == [("hold", "D1", "no delivery agent for route 'hin' in this process")]


async def test_a_delivery_gone_meanwhile_is_skipped() -> None:
    queue, agent = FakeQueue({}), FakeAgent(None)
    await _one(queue, agent)
    assert queue.told == [] and agent.delivered == []


async def test_a_failure_to_record_an_outcome_escapes_nothing_and_spares_the_other_deliveries() -> None:
    class BrokenQueue(FakeQueue):
        def defer(self, delivery_id: str, reason: str) -> None:
            raise ConnectionError("database down")

    queue = BrokenQueue({"D1": "hosted", "D2": "hosted"})
    queue.due = ["D1", "D2"]

    class FirstFails(FakeAgent):
        async def deliver(self, delivery_id: str, fallback_reason: str | None = None) -> None:
            if delivery_id == "D1":
                raise TemporaryFailure("relay down")
            self.delivered.append(delivery_id)

    agent = FirstFails(None)
    worker = DeliveryWorker(queue, {"hosted": agent})  # type: ignore[arg-type, dict-item]
    assert await worker.run_once() == 2  # no exception out of the loop's unit of work
    assert agent.delivered == ["D2"]
