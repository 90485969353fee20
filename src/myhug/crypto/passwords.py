"""Password and secret hashing: argon2id for what people type, SHA-256 for random tokens."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile defaults

# Verified against when the user does not exist, so that an unknown login costs
# the same time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if `password` matches; spends the same effort when `stored_hash` is None."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    """SHA-256 hex of a high-entropy random token (API tokens)."""
    return hashlib.sha256(token.encode()).hexdigest()


# Characters a person copies from paper without doubt: no 0/O/o, 1/l/I/i, 5/S, 2/Z, 8/B, u/v.
READABLE = "34679abcdefghjkmnpqrstwxyzACDEFGHJKLMNPQRTUVWXY"


def readable_password(length: int = 14) -> str:
    """A temporary password to be read from a letter or a screen and typed: random, without look-alikes.

    14 characters from 47 give about 78 bits, as `new_secret(12)` gave 96 bits with ambiguous ones.
    """
    return "".join(secrets.choice(READABLE) for _ in range(length))


def new_secret(nbytes: int = 18) -> str:
    """A URL-safe random secret (passwords issued once, API tokens)."""
    return secrets.token_urlsafe(nbytes)
