"""Staff of the cybersanté service who register physicians in person."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
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
