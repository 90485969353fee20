"""The delivery-agent interface, one implementation per route."""

from __future__ import annotations

from typing import Protocol


class DeliveryAgent(Protocol):
    """Carries one leased delivery to its destination.

    `deliver` commits the final state and its audit event itself, or raises
    `TemporaryFailure` (the queue defers) or `PermanentFailure` (the queue
    fails the delivery). Any other exception is treated as temporary.
    """

    route: str

    async def deliver(self, delivery_id: str) -> None: ...
