"""Sealed blobs: documents and metadata encrypted at rest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from myhug.db.base import Base, UTCDateTime, utcnow


class SealedBlob(Base):
    """AES-256-GCM ciphertext with its data key wrapped by a master key version.

    Erasing `wrapped_key` and `ciphertext` (crypto-shredding) leaves the row as
    a tombstone that still proves the blob existed.
    """

    __tablename__ = "sealed_blob"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    master_key_id: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    shredded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RecipientKey(Base):
    """An OpenPGP key pinned to a physician (by HIN address) or to an HIN domain's gateway."""

    __tablename__ = "recipient_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    physician_id: Mapped[int | None] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"), index=True)
    # The address the key was bound by, or the domain for a domain gateway key.
    address: Mapped[str] = mapped_column(String(320), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # "personal" | "domain"
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
