"""The append-only, hash-chained audit trail."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from myhug.db.base import Base, UTCDateTime


class AuditEvent(Base):
    """One audited transaction.

    `seq` is assigned under the head lock, so it has no gaps and matches the
    chain order. `hash` = SHA-256(prev_hash || canonical JSON of the content).
    No patient identifier is ever written here; documents are named by the
    DPI's document id and the gateway's ids.
    """

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    document_id: Mapped[str | None] = mapped_column(String(200), index=True)
    submission_id: Mapped[str | None] = mapped_column(String(20))
    delivery_id: Mapped[str | None] = mapped_column(String(20), index=True)
    physician_gln: Mapped[str | None] = mapped_column(String(13))
    outcome: Mapped[str] = mapped_column(String(10))
    detail: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """A single row holding the chain's tip; locking it serializes appends on every database."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class Receipt(Base):
    """A receipt owed to the DPI for one audit event: an outbox row, retried until sent."""

    __tablename__ = "receipt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audit_seq: Mapped[int] = mapped_column(Integer, unique=True)
    submission_id: Mapped[str] = mapped_column(String(20), index=True)
    state: Mapped[str] = mapped_column(String(10), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AtnaCursor(Base):
    """How far the trail has been forwarded to the ATNA syslog collector: the trail itself is the buffer."""

    __tablename__ = "atna_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer)
