"""The HIN route's table: the OpenPGP keys and S/MIME certificates pinned to physicians and to HIN domains' gateways."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from myhug.db.base import Base, UTCDateTime, utcnow


class RecipientKey(Base):
    """An OpenPGP key or an S/MIME certificate pinned to a physician (by HIN address) or to an HIN domain's gateway."""

    __tablename__ = "recipient_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    physician_id: Mapped[int | None] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"), index=True)
    # The address the key was bound by, or the domain for a domain gateway key.
    address: Mapped[str] = mapped_column(String(320), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # "personal" | "domain"
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The public key itself (ASCII armour, as gpg exported it on import): every node's GnuPG home takes it from
    # here at first use (`hin.keys.local_key`). Empty for keys imported before it was kept.
    public_key: Mapped[str | None] = mapped_column(Text)
    # "openpgp" (a key; `fingerprint` is gpg's) or "smime" (a PEM certificate; `fingerprint` is its SHA-256).
    envelope: Mapped[str] = mapped_column(String(10), default="openpgp", server_default="openpgp")
