"""Server-side state of the web layer: sessions (physicians' and staff's), login challenges, throttling."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from myhug.db.base import Base, UTCDateTime


class WebSession(Base):
    """A browser session, of a physician (webmail) or of a staff member (registration desk).

    The cookie holds a random token; only its SHA-256 is stored. A physician's
    `stage` walks `sms` (password accepted, code pending) -> `password-change`
    (first login) -> `authenticated`; each step issues a new token. A staff
    session holds in `pending` a registration or phone change awaiting its SMS code.
    """

    __tablename__ = "web_session"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(10), server_default="physician")  # "physician" | "staff" | "assistant"
    physician_id: Mapped[int | None] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"), index=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_member.id", ondelete="CASCADE"), index=True)
    assistant_id: Mapped[int | None] = mapped_column(ForeignKey("assistant.id", ondelete="CASCADE"), index=True)
    # Whose documents the pages show, when not the user's own: the physician a stand-in or an assistant reads for.
    acting_for_id: Mapped[int | None] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"))
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    stage: Mapped[str] = mapped_column(String(20))
    csrf_token: Mapped[str] = mapped_column(String(64))
    challenge_id: Mapped[str | None] = mapped_column(String(32))
    via: Mapped[str] = mapped_column(String(10))  # "sms", "hin" or "totp"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginChallenge(Base):
    """One SMS code, bound to the login attempt that asked for it."""

    __tablename__ = "login_challenge"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Whose code: a physician's, or an assistant's (`assistant_id`, then `physician_id` is empty).
    physician_id: Mapped[int | None] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"), index=True)
    assistant_id: Mapped[int | None] = mapped_column(ForeignKey("assistant.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sends: Mapped[int] = mapped_column(Integer, default=1)
    last_sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Failure counts per key (`login:<name>` or `ip:<address>`) in a sliding window."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)



class TrustedDevice(Base):
    """A browser the physician chose to trust at the SMS step: its logins skip the SMS code, never the password.

    The browser keeps a random token in a `__Host-` cookie; only its SHA-256
    is stored. A device is revoked (never deleted, so "Mon profil" and the
    trail agree) by the physician, a password change, a suspension, a desk
    reset, or it expires after `web.trusted_device_days`.
    """

    __tablename__ = "trusted_device"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    physician_id: Mapped[int] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100))  # "Chrome sur Windows", from the User-Agent
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(30))


class Passkey(Base):
    """A WebAuthn credential of a physician or an assistant (a passkey or a security key), user verification required."""

    __tablename__ = "passkey"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Whose: a physician's, or a practice assistant's (then `physician_id` is empty).
    physician_id: Mapped[int | None] = mapped_column(ForeignKey("physician.id", ondelete="CASCADE"), index=True)
    assistant_id: Mapped[int | None] = mapped_column(ForeignKey("assistant.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1024), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE, as the authenticator gave it
    sign_count: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))  # "platform" (this device) or "security-key"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PasskeyChallenge(Base):
    """The challenge of one WebAuthn ceremony, bound to the browser that asked for it, used once."""

    __tablename__ = "passkey_challenge"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of purpose + the browser's token
    challenge: Mapped[bytes] = mapped_column(LargeBinary(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
