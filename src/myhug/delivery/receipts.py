"""Receipts to the DPI (SPEC §5): multipart/report mail for each document event, retried until sent.

Receipts are an outbox of the audit trail: the sender follows the trail with
a cursor (as the ATNA forwarder does) and, in one transaction, turns each
document event into a `receipt` row and advances the cursor, so each event
gets exactly one receipt row, never lost and never invented. The sender builds it as RFC 6522 `multipart/report` with a short
French/English text, a `message/delivery-status` part (RFC 3464) for delivery
events, and the FHIR AuditEvent as `application/fhir+json`; it is DKIM-signed
and sent from the null sender `<>` through `relay.dpi_smarthost`, so that no
one ever answers it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased, lazyload

from myhug.audit.balp import AuditSource
from myhug.audit.fhir import to_fhir
from myhug.audit.models import AuditEvent, AuditHead, TrailCursor
from myhug.audit.trail import RECEIPT_EVENTS, advance_cursor, events_after_cursor
from myhug.background import BackgroundLoop, heartbeat
from myhug.config.settings import MailSettings, Settings
from myhug.db.base import utcnow
from myhug.db.leases import Leases
from myhug.db.session import Database
from myhug.delivery.models import Delivery, Receipt, Submission
from myhug.delivery.queue import backoff
from myhug.errors import PermanentFailure, TemporaryFailure
from myhug.mail.mime import Header, header_block, leaf, multipart, quoted_printable_text, text_leaf
from myhug.mail.relay import MailSender

log = logging.getLogger(__name__)

# Event -> (RFC 3464 Action, Status) for the events that are delivery events.
DELIVERY_STATUS = {
    "relayed": ("relayed", "2.0.0"),
    "delivered": ("delivered", "2.0.0"),
    "deposited": ("delivered", "2.0.0"),
    "deferred": ("delayed", "4.0.0"),
    "held": ("delayed", "4.0.0"),
    "failed": ("failed", "5.0.0"),
    "expired": ("failed", "4.4.7"),
}
TEXT = {
    "accepted": "Le document a été accepté par la passerelle myHUG. / The document was accepted.",
    "relayed": "Le document a été transmis chiffré au relais HIN. / Relayed, encrypted, to the HIN relay.",
    "delivered": "Le document a été remis dans la boîte HIN du médecin. / Delivered to the physician's HIN mailbox.",
    "deposited": "Le document a été déposé dans la messagerie sécurisée myHUG du médecin. / Deposited in the hosted mailbox.",
    "notified": "Le médecin a été notifié par e-mail. / The physician was notified.",
    "read": "Le médecin a ouvert le document. / The physician opened the document.",
    "deferred": "La remise est retardée; nouvel essai plus tard. / Delivery deferred; will retry.",
    "held": "La remise est suspendue en attente d'un opérateur. / Delivery held for an operator.",
    "failed": "La remise a échoué définitivement. / Delivery failed permanently.",
    "expired": "La remise a expiré. / Delivery expired.",
    "retracted": "Le document a été retiré. / The document was retracted.",
}


@dataclass(frozen=True)
class ReceiptContext:
    event: AuditEvent
    submission: Submission
    recipient: str | None  # the physician's address, for the DSN's Final-Recipient


def build_receipt(ctx: ReceiptContext, mail: MailSettings, source: AuditSource) -> bytes:
    """The receipt message for one audit event, CRLF throughout. Holds no patient data: ids, states and the GLN only.

    Written with `mail.mime` rather than `EmailMessage`: two receipts per
    document made the e-mail package's header parsing and generator a third
    of a delivery worker's CPU.
    """
    event, submission = ctx.event, ctx.submission
    report_type = "delivery-status" if event.event in DELIVERY_STATUS else "fhir-audit-event"
    mail_domain = mail.domain
    detail = json.loads(event.detail or "{}")
    lines = [TEXT.get(event.event, event.event), "", f"Document: {submission.document_id}", f"Queue id: {submission.id}"]
    if event.physician_gln:
        lines.append(f"Recipient GLN: {event.physician_gln}")
    if detail.get("reason"):
        lines.append(f"Reason: {detail['reason']}")
    delegate = detail.get("delegate")
    if isinstance(delegate, dict):  # opened by someone reading for the physician: the DPI learns who
        who = f"stand-in, GLN {delegate.get('gln')}" if delegate.get("kind") == "stand-in" else "practice assistant"
        lines.append(f"Read by: {delegate.get('name')} ({who}), on behalf of the recipient")
    parts = [text_leaf("\n".join(lines) + "\n")]

    if event.event in DELIVERY_STATUS:
        action, status = DELIVERY_STATUS[event.event]
        per_message: list[Header] = [
            ("Reporting-MTA", f"dns; {mail_domain}"),
            ("Original-Envelope-Id", submission.id),
            ("Arrival-Date", format_datetime(submission.received_at)),
        ]
        per_recipient: list[Header] = [
            ("Final-Recipient", f"rfc822; {ctx.recipient or 'unknown'}"),
            ("Action", action),
            ("Status", status),
            ("Last-Attempt-Date", format_datetime(event.occurred_at)),
        ]
        if detail.get("reason"):
            per_recipient.append(("Diagnostic-Code", f"x-myhug; {' '.join(str(detail['reason']).split())[:900]}"))
        # RFC 3464: the per-message fields, a blank line, the per-recipient fields (each block ends blank).
        parts.append(leaf([("Content-Type", "message/delivery-status")],
                          header_block(per_message) + header_block(per_recipient)))

    # Compact: with `indent`, json falls back to its pure-Python encoder (a third of a receipt's cost).
    fhir = json.dumps(to_fhir(event, source), ensure_ascii=False)
    parts.append(leaf([("Content-Type", "application/fhir+json"), ("Content-Transfer-Encoding", "quoted-printable")],
                      quoted_printable_text(fhir + "\n")))
    headers: list[Header] = [
        ("From", f"myHUG <{mail.receipts_address}>"),
        ("To", submission.envelope_sender),
        ("Subject", f"myHUG: {event.event} {submission.document_id}"),
        ("Date", format_datetime(event.occurred_at)),
        # Stable per audit event: a DPI that gets a receipt twice (at least once) recognises the copy.
        ("Message-ID", f"<receipt-{event.seq}@{mail_domain}>"),
        ("Auto-Submitted", "auto-replied"),
        ("X-MyHUG-Document-Id", submission.document_id),
        ("X-MyHUG-Event", event.event),
        ("X-MyHUG-Sequence", str(event.seq)),  # the trail's order: apply receipts in it
        ("MIME-Version", "1.0"),
    ]
    return multipart("report", parts, headers, {"report_type": report_type})


CURSOR = "receipts"


def collect_receipts(session: Session, limit: int = 500) -> tuple[int, int]:
    """Turn the trail's next `limit` events into pending receipts (document events only) and advance the
    cursor; returns (events taken, receipts made)."""
    events = events_after_cursor(session, CURSOR, limit)
    made = 0
    for event in events:
        if event.submission_id is not None and event.event in RECEIPT_EVENTS:
            session.add(Receipt(audit_seq=event.seq, submission_id=event.submission_id, state="pending",
                                attempts=0, next_attempt_at=event.occurred_at, created_at=event.occurred_at))
            made += 1
    if events:
        advance_cursor(session, CURSOR, events[-1].seq)
    return len(events), made


def receipts_outstanding(session: Session) -> bool:
    """True while the trail owes the DPI receipts not yet made, or made and not yet sent."""
    head = session.get(AuditHead, 1)
    cursor = session.get(TrailCursor, CURSOR)
    if head is not None and (cursor is None or cursor.last_seq < head.seq):
        return True
    return session.scalar(select(Receipt.id).where(Receipt.state == "pending").limit(1)) is not None


class ReceiptSender(BackgroundLoop):
    """Collects receipts from the trail and sends them; temporary failures back off like deliveries,
    and expire after the queue lifetime."""

    def __init__(self, db: Database, settings: Settings, relay: MailSender, sign: Callable[[bytes], bytes],
                 owner: str = "receipts") -> None:
        super().__init__()
        self.db = db
        self.settings = settings
        self.relay = relay  # relay.dpi_smarthost
        self.sign = sign
        self.leases = Leases(Receipt, Receipt.state == "pending", owner, settings.queue.lease_seconds)

    def collect(self) -> int:
        """Make the receipts the trail owes, in batches, until it is caught up; returns how many."""
        made, batch = 0, 500
        while True:
            taken, new = self.db.run(lambda session: collect_receipts(session, batch))
            made += new
            if taken < batch:
                return made

    def _claim(self, limit: int = 50) -> list[tuple[int, bytes, str]]:
        """Lease up to `limit` receipts in one short transaction; build and sign them after it.

        Building and DKIM-signing inside the transaction held SQLite's write
        lock through CPU work that needs no lock, and intake queued behind it.
        """
        def step(session: Session) -> list[tuple[int, ReceiptContext]]:
            # Per document, receipts leave in trail order: none while an earlier one is still pending.
            earlier = aliased(Receipt)
            in_order = ~exists().where(earlier.submission_id == Receipt.submission_id, earlier.state == "pending",
                                       earlier.audit_seq < Receipt.audit_seq)
            ids = self.leases.claim(session, limit, [Receipt.audit_seq], where=in_order)
            if not ids:
                return []
            # One statement for the batch: each receipt's event, submission and delivery address.
            # A receipt needs the submission's row, not its documents (a selectin load otherwise).
            rows = {receipt_id: (event, submission, recipient) for receipt_id, event, submission, recipient in
                    session.execute(
                        select(Receipt.id, AuditEvent, Submission, Delivery.recipient_address)
                        .outerjoin(AuditEvent, AuditEvent.seq == Receipt.audit_seq)
                        .outerjoin(Submission, Submission.id == Receipt.submission_id)
                        .outerjoin(Delivery, Delivery.id == AuditEvent.delivery_id)
                        .where(Receipt.id.in_(ids))
                        .options(lazyload(Submission.documents)))}
            out, broken = [], []  # made afresh by each attempt of the transaction
            for receipt_id in ids:  # the claim's order: the trail's
                event, submission, recipient = rows[receipt_id]
                if event is None or submission is None or not submission.envelope_sender:
                    broken.append(receipt_id)
                else:
                    out.append((receipt_id, ReceiptContext(event, submission, recipient)))
            if broken:
                session.execute(update(Receipt).where(Receipt.id.in_(broken))
                                .values(state="failed", last_error="event or sender missing"))
            return out

        source = AuditSource.of(self.settings)
        # The rows are detached once committed, with every column loaded (expire_on_commit is off).
        return [(receipt_id, self.sign(build_receipt(ctx, self.settings.mail, source)),
                 ctx.submission.envelope_sender)
                for receipt_id, ctx in self.db.run(step)]

    def _settle(self, outcomes: list[tuple[int, TemporaryFailure | PermanentFailure | None]]) -> None:
        """Record what became of a batch of sent receipts, in one transaction."""
        now = utcnow()
        sent = [receipt_id for receipt_id, error in outcomes if error is None]
        failures = [(receipt_id, error) for receipt_id, error in outcomes if error is not None]

        def step(session: Session) -> None:
            if sent:  # the usual case, in one statement
                session.execute(update(Receipt).where(Receipt.id.in_(sent)).values(
                    state="sent", last_error=None, lease_owner=None, lease_until=None))
            for receipt_id, error in failures:
                receipt = session.get(Receipt, receipt_id, with_for_update=True)
                if receipt is None:
                    continue
                receipt.lease_owner, receipt.lease_until = None, None
                if isinstance(error, PermanentFailure) or \
                        (now - receipt.created_at).total_seconds() >= self.settings.queue.maximal_lifetime:
                    receipt.state, receipt.last_error = "failed", str(error)
                    log.error("receipt %s to the DPI given up: %s", receipt_id, error)
                else:
                    receipt.last_error = str(error)
                    receipt.next_attempt_at = now + backoff(now - receipt.created_at, self.settings.queue)

        self.db.run(step)

    async def run_once(self) -> int:
        await asyncio.to_thread(self.collect)
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return 0
        outcomes: list[tuple[int, TemporaryFailure | PermanentFailure | None]] = []
        try:
            async with heartbeat(self._renew, self.settings.queue.lease_seconds / 3, "receipts"):
                for receipt_id, raw, to in claimed:
                    try:
                        await self.relay.send(raw, sender="", recipients=[to])  # the null sender: never answered
                    except (TemporaryFailure, PermanentFailure) as exc:
                        outcomes.append((receipt_id, exc))
                    else:
                        outcomes.append((receipt_id, None))
        finally:
            # One transaction for the batch. A crash before it sends these again after the lease:
            # at least once, and each receipt's Message-ID is stable, so the DPI recognises a copy.
            if outcomes:
                await asyncio.to_thread(self._settle, outcomes)
        return sum(1 for _, error in outcomes if error is None)

    def _renew(self) -> int:
        def step(session: Session) -> int:
            return self.leases.renew(session)

        return self.db.run(step)
