"""Directory tables: physicians, their specialties, consents and the DPI clients."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from myhug.db.base import Base, UTCDateTime, utcnow

NOTIFICATION_MODES = ("none", "each", "digest")


class Physician(Base):
    __tablename__ = "physician"
    __table_args__ = (
        CheckConstraint("channel IN ('hin', 'hosted')", name="channel"),
        CheckConstraint("status IN ('registered', 'activated', 'suspended')", name="status"),
        CheckConstraint("notification_mode IN ('none', 'each', 'digest')", name="notification_mode"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gln: Mapped[str] = mapped_column(String(13), unique=True)
    given_name: Mapped[str] = mapped_column(String(200), default="")
    family_name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(10))
    hin_address: Mapped[str | None] = mapped_column(String(320), unique=True)
    login: Mapped[str | None] = mapped_column(String(64), unique=True)
    mobile: Mapped[str | None] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    password_must_change: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(12), default="registered")
    notification_mode: Mapped[str] = mapped_column(String(10), default="each")
    # "Mon profil" choices that are not queried by SQL: landing page, list filters.
    preferences: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    digest_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Folded " family given " (see directory.search): the name search matches " <query>" inside it.
    search_name: Mapped[str] = mapped_column(String(420), default="", index=True)

    specialties: Mapped[list[PhysicianSpecialty]] = relationship(
        back_populates="physician", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}".strip()


class PhysicianSpecialty(Base):
    """A MedReg specialist title (code system urn:oid:2.16.756.5.30.1.127.3.5)."""

    __tablename__ = "physician_specialty"

    physician_id: Mapped[int] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"), primary_key=True)
    code: Mapped[str] = mapped_column(String(10), primary_key=True)

    physician: Mapped[Physician] = relationship(back_populates="specialties")


class Consent(Base):
    """Current designation + authorization of a physician by a patient.

    The patient is stored only as `patient_ref`, a keyed hash of the DPI's
    patient id, so that the table holds no patient identifier in clear.
    """

    __tablename__ = "consent"
    __table_args__ = (UniqueConstraint("patient_ref", "physician_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_ref: Mapped[str] = mapped_column(String(64), index=True)
    physician_id: Mapped[int] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"))
    designated: Mapped[bool] = mapped_column(Boolean)
    electronic_sending_authorized: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))


class ConsentHistory(Base):
    """Every change of a consent, kept after revocation."""

    __tablename__ = "consent_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_ref: Mapped[str] = mapped_column(String(64), index=True)
    physician_id: Mapped[int] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(10))
    designated: Mapped[bool] = mapped_column(Boolean)
    electronic_sending_authorized: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    by: Mapped[str] = mapped_column(String(200))


class DpiClient(Base):
    """A DPI system allowed to submit (SMTP AUTH) and to call the API (bearer token)."""

    __tablename__ = "dpi_client"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    # SHA-256 of a 256-bit random token: a slow hash adds nothing at that entropy.
    api_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Reads every event of the audit feed (the hospital's audit repository); others read their own only.
    all_events: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Assistant(Base):
    """A practice assistant (MPA): a personal account, registered at the desk as a physician is, that reads
    the documents of the physicians who linked it (`Delegation`). No GLN, no mailbox, no profile of its own."""

    __tablename__ = "assistant"
    __table_args__ = (CheckConstraint("status IN ('registered', 'activated', 'suspended')", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    given_name: Mapped[str] = mapped_column(String(200), default="")
    family_name: Mapped[str] = mapped_column(String(200))
    mobile: Mapped[str] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(200))
    password_must_change: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(12), default="registered")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}".strip()

    @property
    def gln(self) -> None:
        """An assistant has no GLN: the trail names it in `detail`, the physician by GLN."""
        return None


class Delegation(Base):
    """Someone who may read a physician's documents: an assistant (until the link ends), or a stand-in
    physician between two dates inclusive. Ended links are kept (`ended_at`): the trail refers to them."""

    __tablename__ = "delegation"
    __table_args__ = (
        CheckConstraint("(assistant_id IS NULL) != (stand_in_id IS NULL)", name="one_delegate"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    physician_id: Mapped[int] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"), index=True)
    assistant_id: Mapped[int | None] = mapped_column(ForeignKey("assistant.id", ondelete="CASCADE"), index=True)
    stand_in_id: Mapped[int | None] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"), index=True)
    starts_on: Mapped[date | None] = mapped_column(Date)
    ends_on: Mapped[date | None] = mapped_column(Date)
    notify: Mapped[bool] = mapped_column(Boolean, default=False)  # the assistant gets the physician's notifications
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
