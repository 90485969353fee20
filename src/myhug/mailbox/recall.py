"""Withdrawing a document sent in error, and erasing hosted documents past their retention."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.background import BackgroundLoop
from myhug.crypto.models import SealedBlob
from myhug.crypto.sealing import Sealer
from myhug.db.base import new_id, utcnow
from myhug.db.session import Database
from myhug.directory.models import Physician
from myhug.gateway.models import Delivery, Submission
from myhug.gateway.queue import PENDING_STATES, create_delivery, transition
from myhug.gateway.states import DeliveryState
from myhug.gateway.routing import HIN
from myhug.mailbox.models import MailboxItem

log = logging.getLogger(__name__)

RETRACTION_SUFFIX = "#retraction"
RETRACTION_TYPE = "retraction-notice"


@dataclass(frozen=True)
class Retraction:
    delivery_id: str
    physician_gln: str
    previous_state: str
    notice_delivery_id: str | None


def retract_document(session: Session, sealer: Sealer, *, dpi_client_id: int, document_id: str,
                     actor: str) -> list[Retraction]:
    """Withdraw every delivery of a document of this DPI client.

    Hosted: the mailbox item becomes `retracted` (listed as withdrawn, no longer
    openable). Not yet sent: the delivery stops. Already relayed to HIN: an
    encrypted, signed retraction notice is queued to the same recipient.
    Each is audited (`retracted`) and so fed back as a receipt.
    """
    deliveries = session.scalars(
        select(Delivery).join(Submission, Submission.id == Delivery.submission_id)
        .where(Delivery.document_id == document_id, Submission.dpi_client_id == dpi_client_id)
        .with_for_update(of=Delivery)
    ).all()
    done: list[Retraction] = []
    for delivery in deliveries:
        if delivery.state in ("retracted", "failed", "expired"):
            continue
        physician = session.get(Physician, delivery.physician_id)
        assert physician is not None
        previous, notice_id = delivery.state, None
        item = session.scalar(select(MailboxItem).where(MailboxItem.delivery_id == delivery.id))
        if item is not None and item.state == "available":
            item.state = "retracted"
        if delivery.route == HIN and previous in ("relayed", "delivered", "read"):
            notice_id = _queue_retraction_notice(session, sealer, delivery, physician)
        transition(session, delivery, DeliveryState.RETRACTED, actor=actor,
                   detail={"previous_state": previous, **({"notice_delivery": notice_id} if notice_id else {})})
        done.append(Retraction(delivery.id, physician.gln, previous, notice_id))
    return done


def _queue_retraction_notice(session: Session, sealer: Sealer, delivery: Delivery, physician: Physician) -> str:
    original = delivery.submission
    meta = json.loads(sealer.open_id(session, original.metadata_blob_id))
    meta["note"] = (
        f"Le document {original.document_id} qui vous a été envoyé le {original.received_at:%d.%m.%Y} "
        "a été retiré par les HUG : il vous a été adressé par erreur. Merci de ne pas en tenir compte "
        "et de le supprimer.\n"
    )
    meta["subject"] = f"Retrait du document {original.document_id}"
    meta["filenames"] = []
    now = utcnow()
    notice = Submission(
        id=new_id(), dpi_client_id=original.dpi_client_id, envelope_sender=original.envelope_sender,
        document_id=original.document_id + RETRACTION_SUFFIX, document_type=RETRACTION_TYPE,
        patient_ref=original.patient_ref,
        metadata_blob_id=sealer.seal(session, json.dumps(meta, ensure_ascii=False).encode()).id, received_at=now,
    )
    session.add(notice)
    # No "accepted" event: the "retracted" event of the original names this notice's delivery.
    notice_delivery = create_delivery(session, notice, physician, route=HIN,
                                      recipient_address=delivery.recipient_address, actor="gateway:retraction",
                                      event=None)
    return notice_delivery.id


def expire_past_retention(session: Session, retention_days: int, limit: int = 200) -> int:
    """Hosted documents older than the retention: marked `expired`, their keys erased (crypto-shredding).

    A submission's blobs are shredded once none of its deliveries can still
    need them. Audit events outlive the documents.
    """
    horizon = utcnow() - timedelta(days=retention_days)
    items = session.scalars(
        select(MailboxItem).where(MailboxItem.state.in_(("available", "retracted")), MailboxItem.deposited_at < horizon)
        .order_by(MailboxItem.deposited_at).limit(limit)
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
        def sweep() -> int:
            with self.db.transaction() as session:
                return expire_past_retention(session, self.retention_days)

        expired = await asyncio.to_thread(sweep)
        if expired:
            log.info("retention: %d hosted documents expired and erased", expired)
        return expired
