"""The append-only, hash-chained audit trail."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from myhug.db.base import Base, UTCDateTime, utcnow


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
    submission_id: Mapped[str | None] = mapped_column(String(20), index=True)
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


class TrailCursor(Base):
    """How far a follower of the trail got (`receipts`, `atna`): the trail itself is their durable buffer."""

    __tablename__ = "trail_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)
    # A follower that forwards outside the database (ATNA) leases its cursor, so one process forwards at a time.
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
