"""Submissions from the DPI and the per-recipient delivery state machine."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from myhug.db.base import Base, UTCDateTime, new_id, utcnow
from myhug.delivery.states import DeliveryState

# The document type and id suffix of the notice the HIN route sends when a relayed document is retracted.
RETRACTION_TYPE = "retraction-notice"
RETRACTION_SUFFIX = "#retraction"


class Submission(Base):
    """One message accepted from the DPI. Patient metadata lives only in the sealed blob."""

    __tablename__ = "submission"

    id: Mapped[str] = mapped_column(String(20), primary_key=True, default=new_id)
    dpi_client_id: Mapped[int] = mapped_column(ForeignKey("dpi_client.id"))
    envelope_sender: Mapped[str] = mapped_column(String(320))
    document_id: Mapped[str] = mapped_column(String(200), index=True)
    document_type: Mapped[str | None] = mapped_column(String(64))
    patient_ref: Mapped[str] = mapped_column(String(64), index=True)
    # Sealed JSON: patient id, name, birthdate, subject, attachment file names.
    metadata_blob_id: Mapped[str] = mapped_column(ForeignKey("sealed_blob.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    documents: Mapped[list[SubmissionDocument]] = relationship(
        back_populates="submission", order_by="SubmissionDocument.position", lazy="selectin"
    )


class SubmissionDocument(Base):
    """One attachment of a submission, sealed. Its file name is in the sealed metadata."""

    __tablename__ = "submission_document"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submission.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_id: Mapped[str] = mapped_column(ForeignKey("sealed_blob.id"))

    submission: Mapped[Submission] = relationship(back_populates="documents")


class Delivery(Base):
    """The fate of one submission for one recipient physician (states: `delivery.states`).

    Only `delivery.queue` creates these rows or changes their state.
    """

    __tablename__ = "delivery"
    __table_args__ = (
        # The idempotency key of SPEC §4: a document id is delivered once per recipient.
        UniqueConstraint("document_id", "physician_id"),
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s.value}'" for s in DeliveryState) + ")",
            name="state",
        ),
        Index("ix_delivery_pending", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(20), primary_key=True, default=new_id)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submission.id"), index=True)
    document_id: Mapped[str] = mapped_column(String(200))
    physician_id: Mapped[int] = mapped_column(ForeignKey("physician.id"))
    recipient_address: Mapped[str] = mapped_column(String(320))
    route: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(12), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # HIN route: the Message-ID sent (the same at every attempt, so a duplicate can be recognised).
    message_id: Mapped[str | None] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    # Not joined-eager: deliveries are locked FOR UPDATE, which PostgreSQL refuses across an outer join.
    submission: Mapped[Submission] = relationship()


class Receipt(Base):
    """A receipt owed to the DPI for one audit event: an outbox row, made from the trail, retried until sent."""

    __tablename__ = "receipt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audit_seq: Mapped[int] = mapped_column(Integer, unique=True)
    submission_id: Mapped[str] = mapped_column(String(20), index=True)
    state: Mapped[str] = mapped_column(String(10), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
