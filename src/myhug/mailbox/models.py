"""The hosted encrypted mailbox: which sealed submission sits in whose mailbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from myhug.db.base import Base, UTCDateTime, utcnow
from myhug.delivery.models import Submission


class MailboxItem(Base):
    """A document deposited for a physician. The content stays sealed in `sealed_blob`."""

    __tablename__ = "mailbox_item"
    __table_args__ = (CheckConstraint("state IN ('available', 'retracted', 'expired')", name="state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    physician_id: Mapped[int] = mapped_column(ForeignKey("physician.id"), index=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("delivery.id"), unique=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submission.id"))
    state: Mapped[str] = mapped_column(String(10), default="available")
    deposited_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The list's "seen" mark: set by the first opening or by "Marquer comme lu", cleared by "non lu".
    # The DPI's read receipt follows the delivery's state instead (reading.record_reading).
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Who of the physician's delegates (assistant, stand-in) opened it first: "lu par …" on the physician's list.
    read_by: Mapped[str | None] = mapped_column(String(200))
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The notifier's lease (db.leases): one process notifies each document.
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the DPI withdrew it, and its reason sealed (free text may name the patient).
    retracted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retraction_blob_id: Mapped[str | None] = mapped_column(ForeignKey("sealed_blob.id"))

    submission: Mapped[Submission] = relationship(lazy="joined")
