"""Staff of the cybersanté service who register physicians in person."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from myhug.db.base import Base, UTCDateTime


class StaffMember(Base):
    __tablename__ = "staff_member"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    # The TOTP secret, sealed like a document (it is a second factor, not to be read off a backup).
    totp_blob_id: Mapped[str] = mapped_column(ForeignKey("sealed_blob.id"))
    last_totp_counter: Mapped[int] = mapped_column(Integer, default=0)  # a code is accepted once
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StaffSession(Base):
    """A staff browser session; `pending` holds a registration or phone change awaiting its SMS code."""

    __tablename__ = "staff_session"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_member.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
