"""Sealed blobs: documents and metadata encrypted at rest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String
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
