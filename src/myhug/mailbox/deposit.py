"""Hosted route: deposit a sealed submission in the physician's hosted mailbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.blobs.store import Sealer
from myhug.db.base import utcnow
from myhug.delivery.models import Delivery
from myhug.delivery.queue import DeliveryQueue, transition
from myhug.delivery.routing import HOSTED
from myhug.delivery.states import DeliveryState
from myhug.mailbox.models import MailboxItem


class HostedMailboxAgent:
    """The `DeliveryAgent` of the hosted route.

    The document is not re-encrypted: it stays sealed where intake put it,
    and the mailbox item only points at the submission. `on_deposit` lets the
    notifier (webmail issue) learn of new documents without a poll.
    """

    route = HOSTED

    def __init__(self, queue: DeliveryQueue, on_deposit: Callable[[int], None] | None = None,
                 sealer: Sealer | None = None) -> None:
        self.queue = queue
        self.on_deposit = on_deposit
        self.sealer = sealer  # seals a retraction's reason

    def withdraw(self, session: Session, delivery: Delivery, reason: str | None = None) -> dict[str, object]:
        """A retracted document shows as withdrawn in "Mes documents" (when, and why if the DPI said) and can
        no longer be opened."""
        item = session.scalar(select(MailboxItem).where(MailboxItem.delivery_id == delivery.id))
        if item is not None and item.state == "available":
            item.state = "retracted"
            item.retracted_at = utcnow()
            if reason and self.sealer is not None:
                item.retraction_blob_id = self.sealer.seal(session, reason.encode()).id
        return {}

    async def deliver(self, delivery_id: str, fallback_reason: str | None = None) -> None:
        """Deposit; `fallback_reason` says why a delivery meant for the HIN route comes here instead."""
        physician_id = await asyncio.to_thread(self._deposit, delivery_id, fallback_reason)
        if physician_id is not None and self.on_deposit is not None:
            self.on_deposit(physician_id)

    def _deposit(self, delivery_id: str, fallback_reason: str | None = None) -> int | None:
        def step(session: Session) -> int | None:
            delivery = self.queue.leased(session, delivery_id)
            if delivery is None:
                return None
            if fallback_reason is not None:
                delivery.route = HOSTED
            # Idempotent: a crash after the insert but before the commit leaves nothing behind.
            if session.scalar(select(MailboxItem.id).where(MailboxItem.delivery_id == delivery.id)) is None:
                session.add(
                    MailboxItem(
                        physician_id=delivery.physician_id,
                        delivery_id=delivery.id,
                        submission_id=delivery.submission_id,
                        state="available",
                        deposited_at=utcnow(),
                    )
                )
            transition(session, delivery, DeliveryState.DEPOSITED, actor="gateway:hosted",
                       detail={"fallback_from": "hin", "reason": fallback_reason} if fallback_reason else None)
            return delivery.physician_id

        return self.queue.record_outcome(step)
