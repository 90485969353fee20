"""One-time codes (SMS login codes, mobile checks): 6 digits from the CSPRNG, stored salted and hashed,
compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def code_hash(salt: str, code: str) -> str:
    """What is stored of a code: SHA-256 of the salt (a challenge id or random) and the code."""
    return hashlib.sha256(f"{salt}:{code.strip()}".encode()).hexdigest()


def code_matches(stored_hash: str, salt: str, code: str) -> bool:
    return hmac.compare_digest(stored_hash, code_hash(salt, code))
