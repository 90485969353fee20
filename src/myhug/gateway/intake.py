"""Accepting a parsed submission: policy checks, sealed rows, delivery rows, audit, all in one transaction.

The SMTP edge encrypts the documents first (`seal_documents`, no database
lock held), then calls `accept_submission` in a transaction and answers
250 only once that transaction has committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.blobs.store import PreparedBlob, Sealer
from myhug.db.base import new_id, utcnow
from myhug.delivery.models import Delivery, Submission, SubmissionDocument
from myhug.delivery.queue import create_delivery
from myhug.delivery.routing import choose_route
from myhug.directory.models import Physician
from myhug.directory.service import (
    NotActivated,
    UnknownRecipient,
    delivery_address,
    has_consent,
    require_activated,
    resolve_recipient,
)
from myhug.errors import PermanentFailure
from myhug.gateway.submission import ParsedSubmission


class Refused(PermanentFailure):
    """A policy refusal, carrying its SMTP reply."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True)
class Accepted:
    submission_id: str
    new_deliveries: int
    duplicates: int


@dataclass(frozen=True)
class SealedDocument:
    """A document encrypted before the intake transaction: what that transaction stores of it."""

    content_type: str
    sha256: str
    blob: PreparedBlob  # its `size` is the document's


def seal_documents(sealer: Sealer, parsed: ParsedSubmission) -> tuple[ParsedSubmission, list[SealedDocument]]:
    """Encrypt a submission's documents outside any transaction.

    Returns the submission with its documents' bytes let go (their names
    and types stay) and the documents sealed: a 25 MB document is then
    not held in clear while its row is written, and AES-GCM runs without
    the database's write lock.
    """
    sealed = [SealedDocument(document.content_type, hashlib.sha256(document.data).hexdigest(),
                             sealer.prepare(document.data))
              for document in parsed.documents]
    kept = dataclasses.replace(parsed, documents=[dataclasses.replace(d, data=b"") for d in parsed.documents])
    return kept, sealed


def check_recipient(session: Session, address: str, mail_domain: str) -> Physician:
    """RCPT-time check: the physician exists and is activated; raises `Refused` with the reply."""
    try:
        physician = resolve_recipient(session, address, mail_domain)
    except UnknownRecipient as exc:
        raise Refused(f"550 5.1.1 {exc}") from None
    try:
        require_activated(physician)
    except NotActivated as exc:
        raise Refused(f"550 5.7.1 {exc}") from None
    return physician


def vet_recipients(session: Session, sealer: Sealer, *, patient_id: str, recipients: list[str],
                   mail_domain: str) -> list[Physician]:
    """Check every recipient of a submission: known, activated, and designated with consent by the patient.

    Raises `Refused` naming the first recipient that fails (SMTP has one DATA
    reply, so one refusal refuses the whole message). Returns the distinct
    physicians, whose loaded rows `accept_submission` then uses.

    It only reads, so the SMTP edge runs it before the write transaction and
    outside the database's write lock. A physician suspended or a consent
    revoked in the moment between this check and the commit is caught where
    it matters: the delivery worker checks both again (`DeliveryQueue.inspect`)
    before anything leaves.
    """
    patient_ref = sealer.patient_ref(patient_id)
    physicians: list[Physician] = []
    for address in recipients:
        physician = check_recipient(session, address, mail_domain)
        if not has_consent(session, patient_ref, physician.id):
            raise Refused(
                f"550 5.7.1 recipient {physician.gln}: the patient has not designated this physician "
                "or not authorized electronic sending"
            )
        if all(p.id != physician.id for p in physicians):
            physicians.append(physician)
    return physicians


def accept_submission(
    session: Session,
    sealer: Sealer,
    *,
    dpi_client_id: int,
    envelope_sender: str,
    physicians: list[Physician],
    parsed: ParsedSubmission,
    documents: list[SealedDocument],
    mail_domain: str,
    hin_domains: list[str],
    peer: str | None = None,
) -> Accepted:
    """Store the sealed documents and queue them for each vetted physician not yet served.

    `physicians` come from `vet_recipients`; `documents` are `parsed`'s,
    sealed by `seal_documents`. A unit retried after a lost race stores the
    same sealed blobs again. The physicians' rows are only read (id, GLN,
    route, address), so they may come from another session.
    """
    patient_ref = sealer.patient_ref(parsed.patient_id)
    existing = {
        d.physician_id: d
        for d in session.scalars(
            select(Delivery).where(
                Delivery.document_id == parsed.document_id,
                Delivery.physician_id.in_([p.id for p in physicians]),
            )
        )
    }
    fresh = [p for p in physicians if p.id not in existing]
    if not fresh:
        # Every recipient already has this document: answer with the original queue id.
        first = next(iter(existing.values()))
        return Accepted(first.submission_id, 0, len(existing))

    now = utcnow()
    metadata_blob = sealer.seal(session, json.dumps(parsed.sealed_metadata(), ensure_ascii=False).encode())
    submission = Submission(
        id=new_id(),
        dpi_client_id=dpi_client_id,
        envelope_sender=envelope_sender,
        document_id=parsed.document_id,
        document_type=parsed.document_type,
        patient_ref=patient_ref,
        metadata_blob_id=metadata_blob.id,
        received_at=now,
    )
    session.add(submission)
    for position, document in enumerate(documents):
        blob = sealer.store(session, document.blob)
        session.add(
            SubmissionDocument(
                submission_id=submission.id,
                position=position,
                content_type=document.content_type,
                size=document.blob.size,
                sha256=document.sha256,
                blob_id=blob.id,
            )
        )
    for physician in fresh:
        route = choose_route(physician, hin_domains)
        create_delivery(session, submission, physician, route=route,
                        recipient_address=delivery_address(physician, mail_domain), actor=f"dpi:{dpi_client_id}",
                        detail={"route": route, "documents": len(documents),
                                **({"peer": peer} if peer else {})})
    return Accepted(submission.id, len(fresh), len(existing))


def record_refusal(session: Session, *, actor: str, reply: str, document_id: str | None, recipient: str | None) -> None:
    """Audit a refused submission or recipient (the reply text never holds patient data)."""
    record(
        session,
        "refused",
        actor=actor,
        outcome="refused",
        document_id=document_id,
        detail={"reply": reply, "recipient": recipient},
    )
