"""Erasing hosted documents past their retention (crypto-shredding); the trail outlives them."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.background import BackgroundLoop
from myhug.blobs.models import SealedBlob
from myhug.blobs.store import Sealer
from myhug.db.base import utcnow
from myhug.db.session import Database
from myhug.delivery.models import Delivery, Submission
from myhug.delivery.queue import PENDING_STATES, transition
from myhug.delivery.states import DeliveryState
from myhug.directory.models import Physician
from myhug.mailbox.models import MailboxItem

log = logging.getLogger(__name__)

def expire_past_retention(session: Session, retention_days: int, limit: int = 200) -> int:
    """Hosted documents older than the retention: marked `expired`, their keys erased (crypto-shredding).

    A submission's blobs are shredded once none of its deliveries can still
    need them. Audit events outlive the documents.
    """
    horizon = utcnow() - timedelta(days=retention_days)
    items = session.scalars(
        select(MailboxItem).where(MailboxItem.state.in_(("available", "retracted")), MailboxItem.deposited_at < horizon)
        .order_by(MailboxItem.deposited_at).limit(limit)
        # Several worker processes sweep: each item is expired by the one that locked it.
        .with_for_update(skip_locked=True, of=MailboxItem)
    ).all()
    for item in items:
        item.state = "expired"
        delivery = session.get(Delivery, item.delivery_id)
        detail: dict[str, object] = {"reason": f"retention of {retention_days} days reached; document erased"}
        if delivery is not None and delivery.state in (DeliveryState.DEPOSITED, DeliveryState.READ):
            transition(session, delivery, DeliveryState.EXPIRED, actor="gateway:retention", detail=detail)
        else:  # a retracted document's content is erased too; its delivery stays `retracted`
            physician = session.get(Physician, item.physician_id)
            record(session, "expired", actor="gateway:retention", document_id=item.submission.document_id,
                   submission_id=item.submission_id, delivery_id=item.delivery_id,
                   physician_gln=physician.gln if physician else None, detail=detail)
        _shred_if_unused(session, item.submission)
    return len(items)


def _shred_if_unused(session: Session, submission: Submission) -> None:
    still_needed = session.scalar(
        select(Delivery.id).where(Delivery.submission_id == submission.id,
                                  Delivery.state.in_((*PENDING_STATES, "held", "deposited", "read")))
        .limit(1)
    )
    open_items = session.scalar(
        select(MailboxItem.id).where(MailboxItem.submission_id == submission.id, MailboxItem.state == "available").limit(1)
    )
    if still_needed or open_items:
        return
    for blob_id in [submission.metadata_blob_id, *(d.blob_id for d in submission.documents)]:
        blob = session.get(SealedBlob, blob_id)
        if blob is not None and blob.ciphertext is not None:
            Sealer.shred(blob)


class RetentionSweeper(BackgroundLoop):
    """Runs `expire_past_retention` in the worker role, every `interval` seconds."""

    def __init__(self, db: Database, retention_days: int) -> None:
        super().__init__()
        self.db = db
        self.retention_days = retention_days

    async def run_once(self) -> int:
        expired = await asyncio.to_thread(self.db.run, lambda s: expire_past_retention(s, self.retention_days))
        if expired:
            log.info("retention: %d hosted documents expired and erased", expired)
        return expired
