"""Inbound receipts from the HIN side: DSN (RFC 3464) and MDN (RFC 8098).

A separate listener (`smtp.inbound_listen`): no AUTH, STARTTLS offered, only
the gateway's receipt address accepted, nothing ever relayed. A report is
matched to its delivery by ENVID (DSN) or Original-Message-ID (MDN), and must
name the delivery's own recipient; anything unmatched, malformed or forged
changes nothing and is logged. An MDN is never answered.

A report can arrive before the gateway has recorded what it reports on: a
fast relay sends its `delivered` DSN a tenth of a second after its own 250,
while the worker is still committing `relayed`. Such a report is answered
`451 4.4.0` (`ReportOutcome.too_early`), so the relay keeps it and sends it
again; it is never answered 250 and dropped.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import parseaddr

from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.config.settings import Settings, peer_in_networks
from myhug.crypto.dkim import TxtLookup, verify_dkim
from myhug.db.session import Database
from myhug.delivery.models import Delivery
from myhug.delivery.queue import transition
from myhug.delivery.states import PENDING, DeliveryState
from myhug.directory.models import Physician

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOutcome:
    matched: bool
    event: str | None
    note: str
    too_early: bool = False  # the delivery is still in flight: the sender must try again later


TOO_EARLY = "451 4.4.0 The delivery this report is about is still being recorded; try again later"


def _still_in_flight(delivery: Delivery, kind: str) -> ReportOutcome | None:
    """A report on a delivery not yet recorded as relayed: to be sent again, never dropped."""
    if delivery.state in PENDING:
        return ReportOutcome(True, None, f"{kind} for delivery {delivery.id} in state {delivery.state}: "
                                         "too early, the relay will send it again", too_early=True)
    return None


def _field_address(value: str | None) -> str:
    """`rfc822; addr` -> addr, lower-cased."""
    if not value:
        return ""
    return value.split(";", 1)[-1].strip().strip("<>").lower()


def _report_part(message: Message, content_type: str) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _fields(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/disposition-notification part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):
        return [email.message_from_string(block.strip() + "\n") for block in payload.replace("\r\n", "\n").split("\n\n") if block.strip()]
    return []


class ReceiptIntake:
    """Applies DSNs and MDNs to deliveries."""

    def __init__(self, db: Database, settings: Settings, dkim_dns: TxtLookup | None = None) -> None:
        self.db = db
        self.settings = settings
        self.dkim_dns = dkim_dns  # None: DNS; tests inject the HIN side's key record

    def apply(self, raw: bytes) -> ReportOutcome:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        report_type = (message.get_param("report-type") or "") if message.get_content_type() == "multipart/report" else ""
        if report_type not in ("delivery-status", "disposition-notification"):
            return ReportOutcome(False, None, "not a delivery status or disposition report")
        # Recorded on the event, not enforced: the peer check (smtp.inbound_peers) is the gate, and not
        # every HIN relay signs its reports. A DNS lookup happens here, outside any transaction.
        dkim_result = verify_dkim(raw, self.dkim_dns)
        if report_type == "delivery-status":
            return self._dsn(message, dkim_result)
        return self._mdn(message, dkim_result)

    def _dsn(self, message: Message, dkim_result: str) -> ReportOutcome:
        part = _report_part(message, "message/delivery-status")
        blocks = _fields(part) if part is not None else []
        if len(blocks) < 2:
            return ReportOutcome(False, None, "malformed DSN")
        envid = (blocks[0].get("Original-Envelope-Id") or "").strip()
        def step(session: Session) -> ReportOutcome:
            delivery = session.get(Delivery, envid.upper()) if envid else None
            if delivery is None or delivery.route != "hin":
                return ReportOutcome(False, None, f"DSN for unknown envelope id {envid!r}")
            physician = session.get(Physician, delivery.physician_id)
            assert physician is not None
            early = _still_in_flight(delivery, "DSN")
            for block in blocks[1:]:
                recipient = _field_address(block.get("Final-Recipient")) or _field_address(block.get("Original-Recipient"))
                if recipient != (physician.hin_address or "").lower():
                    continue
                if early is not None:
                    return early
                action = (block.get("Action") or "").strip().lower()
                status = (block.get("Status") or "").strip()
                # RFC 3464 2.3.3: "delivered" is final; "relayed" (passed to a system that reports no
                # further) and "expanded" (an alias delivered to its members) are as far as anyone will
                # tell: the document is handed on, which the gateway records as delivered.
                if action in ("delivered", "relayed", "expanded") and delivery.state == DeliveryState.RELAYED:
                    transition(session, delivery, DeliveryState.DELIVERED, actor="hin:dsn",
                               detail={"status": status, "dsn_action": action, "dkim": dkim_result})
                    return ReportOutcome(True, "delivered", f"DSN {action}")
                if action == "delayed" and delivery.state == DeliveryState.RELAYED:
                    # Not final: recorded (and reported to the DPI), the state stays `relayed`.
                    diagnostic = (block.get("Diagnostic-Code") or "").strip()[:300]
                    record(session, "deferred", actor="hin:dsn", outcome="deferred", document_id=delivery.document_id,
                           submission_id=delivery.submission_id, delivery_id=delivery.id,
                           physician_gln=physician.gln,
                           detail={"status": status, "dsn_action": action, "dkim": dkim_result,
                                   "reason": f"HIN side: {diagnostic or status}"})
                    return ReportOutcome(True, "deferred", "DSN delayed")
                if action == "failed" and delivery.state in (DeliveryState.RELAYED, DeliveryState.DELIVERED):
                    diagnostic = (block.get("Diagnostic-Code") or "").strip()[:300]
                    reason = f"HIN side: {diagnostic or status}"
                    transition(session, delivery, DeliveryState.FAILED, actor="hin:dsn", outcome="failure",
                               detail={"status": status, "reason": reason, "dkim": dkim_result}, error=reason)
                    return ReportOutcome(True, "failed", "DSN failed")
                return ReportOutcome(True, None, f"DSN action {action!r} in state {delivery.state}: nothing to change")
            return ReportOutcome(False, None, f"DSN for delivery {delivery.id} names another recipient")

        return self.db.run(step)

    def _mdn(self, message: Message, dkim_result: str) -> ReportOutcome:
        part = _report_part(message, "message/disposition-notification")
        blocks = _fields(part) if part is not None else []
        if not blocks:
            return ReportOutcome(False, None, "malformed MDN")
        fields = blocks[0]
        original = (fields.get("Original-Message-ID") or "").strip()
        final_recipient = _field_address(fields.get("Final-Recipient"))
        sender = parseaddr(str(message.get("From", "")))[1].lower()
        disposition = (fields.get("Disposition") or "").lower()
        def step(session: Session) -> ReportOutcome:
            delivery = session.scalar(select(Delivery).where(Delivery.message_id == original)) if original else None
            if delivery is None:
                # Not recorded yet (an MDN before `relayed` is committed): the gateway's Message-IDs name
                # their delivery, `<delivery id@mail domain>` (HinRouteAgent.message_id).
                local, _, domain = original.strip("<>").rpartition("@")
                if local and domain.lower() == self.settings.mail.domain.lower():
                    found = session.get(Delivery, local.upper())
                    delivery = found if found is not None and found.route == "hin" else None
            if delivery is None:
                return ReportOutcome(False, None, f"MDN for unknown message {original!r}")
            physician = session.get(Physician, delivery.physician_id)
            assert physician is not None
            address = (physician.hin_address or "").lower()
            # Both the report's recipient and its author must be the physician the message went to.
            if final_recipient != address or sender != address:
                return ReportOutcome(False, None, f"MDN for delivery {delivery.id} not from its recipient (forged?)")
            if "displayed" not in disposition.split(";")[-1]:
                return ReportOutcome(True, None, f"MDN disposition {disposition!r}: nothing to change")
            early = _still_in_flight(delivery, "MDN")
            if early is not None:
                return early
            if delivery.state in (DeliveryState.RELAYED, DeliveryState.DELIVERED):
                transition(session, delivery, DeliveryState.READ, actor="hin:mdn",
                           detail={"disposition": disposition[:100], "dkim": dkim_result})
                return ReportOutcome(True, "read", "MDN displayed")
            return ReportOutcome(True, None, f"MDN in state {delivery.state}: nothing to change")

        return self.db.run(step)


class InboundReceiptsHandler:
    """aiosmtpd handler of the inbound listener."""

    def __init__(self, intake: ReceiptIntake, settings: Settings) -> None:
        self.intake = intake
        self.settings = settings

    def _is_receipts_address(self, address: str) -> bool:
        local, _, domain = address.lower().strip("<>").rpartition("@")
        base = self.settings.mail.receipts_local_part.lower()
        return domain == self.settings.mail.domain.lower() and (local == base or local.startswith(base + "+"))

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        if not peer_in_networks(peer, self.settings.smtp.inbound_peers):
            log.warning("inbound receipt refused: peer %s is not in smtp.inbound_peers", peer)
            return "550 5.7.1 This listener takes receipts from the HIN relay only"
        if not self._is_receipts_address(address):
            return "550 5.7.1 Relaying denied: this listener only takes delivery and read receipts"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        try:
            outcome = await asyncio.to_thread(self.intake.apply, envelope.original_content or b"")
        except Exception:
            log.exception("inbound receipt could not be processed")
            return "451 4.3.0 Temporary failure; try again later"
        if outcome.too_early:
            log.info("inbound receipt deferred: %s", outcome.note)
            return TOO_EARLY
        if outcome.event is None and outcome.note.startswith("not a"):
            log.warning("inbound message refused: %s", outcome.note)
            return "554 5.6.0 Only delivery status and disposition notifications are accepted here"
        log.log(logging.INFO if outcome.matched else logging.WARNING, "inbound receipt: %s", outcome.note)
        return "250 2.0.0 Receipt processed"

    async def handle_exception(self, error: Exception) -> str:
        log.error("inbound listener fault: %s", error, exc_info=error)
        return "451 4.3.0 Temporary failure; try again later"
