"""The delivery-agent interface, one implementation per route (HIN here, hosted in `mailbox`)."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session

from myhug.delivery.models import Delivery


class DeliveryAgent(Protocol):
    """Carries one leased delivery to its destination, and takes back what it delivered.

    `deliver` commits the final state and its audit event itself (through the
    queue), or raises `TemporaryFailure` (the queue defers) or
    `PermanentFailure` (the queue fails the delivery). Any other exception is
    treated as temporary. `fallback_reason`, when given, says why a delivery
    meant for another route comes to this agent instead.
    """

    route: str

    async def deliver(self, delivery_id: str, fallback_reason: str | None = None) -> None: ...

    def withdraw(self, session: Session, delivery: Delivery, reason: str | None = None) -> dict[str, object]:
        """Undo, in the caller's transaction, what this route did with a delivery being retracted.

        `reason` is the DPI's own words, shown to the physician (never in the
        audit trail: free text may name a patient). Returns details for the
        `retracted` audit event. The caller moves the delivery to `retracted`.
        """
        ...
