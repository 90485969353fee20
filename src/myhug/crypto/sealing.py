"""Sealing at rest: AES-256-GCM envelope encryption with a rotatable master key.

Each blob gets a fresh 256-bit data key. The data key is wrapped (AES-GCM)
by the current master key version; the keyring keeps older versions so that
old blobs stay readable until `rewrap` moves them to the current one. The
keyring also holds the key of the patient blind index (`patient_ref`), which
is never rotated because consents are looked up by it.

Sealing runs in-process: accepting a document costs no subprocess.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.crypto.models import SealedBlob
from myhug.db.base import new_id, utcnow
from myhug.errors import MyhugError, PermanentFailure


class KeyringError(MyhugError):
    """The master keyring is missing, unreadable or has unsafe permissions."""


class BlobUnavailable(PermanentFailure):
    """The blob was shredded, or its ciphertext does not authenticate."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class Keyring:
    """Master key versions and the blind-index key, stored as JSON with mode 0600."""

    current: int
    keys: dict[int, bytes]
    index_key: bytes

    @classmethod
    def generate(cls) -> Keyring:
        return cls(current=1, keys={1: AESGCM.generate_key(256)}, index_key=secrets.token_bytes(32))

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            mode = path.stat().st_mode & 0o777
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeyringError(f"master key not found: {path} (run `myhug init`)") from None
        except (OSError, ValueError) as exc:
            raise KeyringError(f"master key unreadable: {path}: {exc}") from None
        if mode & 0o077:
            raise KeyringError(f"master key {path} is readable by others (mode {mode:o}); chmod 600 it")
        return cls(
            current=int(raw["current"]),
            keys={int(k): base64.b64decode(v) for k, v in raw["keys"].items()},
            index_key=base64.b64decode(raw["index_key"]),
        )

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename), mode 0600 from the first byte."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        payload = json.dumps(
            {
                "current": self.current,
                "keys": {str(k): _b64(v) for k, v in self.keys.items()},
                "index_key": _b64(self.index_key),
            },
            indent=2,
        ).encode()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def rotate(self) -> int:
        """Add a new master key version and make it current; returns its id."""
        self.current = max(self.keys) + 1
        self.keys[self.current] = AESGCM.generate_key(256)
        return self.current


class Sealer:
    """Seals and opens blobs stored in the `sealed_blob` table."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def patient_ref(self, patient_id: str) -> str:
        """The blind index of a DPI patient id: HMAC-SHA256, hex."""
        return hmac.new(self.keyring.index_key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def seal(self, session: Session, plaintext: bytes) -> SealedBlob:
        """Encrypt `plaintext` under a fresh data key and add the blob to `session`."""
        blob_id = new_id()
        data_key = AESGCM.generate_key(256)
        nonce = secrets.token_bytes(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, blob_id.encode())
        key_id = self.keyring.current
        blob = SealedBlob(
            id=blob_id,
            master_key_id=key_id,
            wrapped_key=self._wrap(key_id, blob_id, data_key),
            nonce=nonce,
            ciphertext=ciphertext,
            size=len(plaintext),
            created_at=utcnow(),
        )
        session.add(blob)
        return blob

    def open(self, blob: SealedBlob) -> bytes:
        """Decrypt a blob; raises `BlobUnavailable` if shredded or tampered with."""
        if blob.wrapped_key is None or blob.ciphertext is None:
            raise BlobUnavailable(f"blob {blob.id} was erased")
        try:
            data_key = self._unwrap(blob.master_key_id, blob.id, blob.wrapped_key)
            return AESGCM(data_key).decrypt(blob.nonce, blob.ciphertext, blob.id.encode())
        except InvalidTag:
            raise BlobUnavailable(f"blob {blob.id} does not authenticate") from None

    def open_id(self, session: Session, blob_id: str) -> bytes:
        blob = session.get(SealedBlob, blob_id)
        if blob is None:
            raise BlobUnavailable(f"blob {blob_id} not found")
        return self.open(blob)

    @staticmethod
    def shred(blob: SealedBlob) -> None:
        """Crypto-shredding: drop the wrapped key and the ciphertext, keep a tombstone."""
        blob.wrapped_key = None
        blob.ciphertext = None
        blob.shredded_at = utcnow()

    def rewrap(self, session: Session, batch_size: int = 500) -> int:
        """Re-wrap every data key under the current master key; returns how many moved."""
        moved = 0
        stmt = select(SealedBlob).where(
            SealedBlob.master_key_id != self.keyring.current, SealedBlob.wrapped_key.is_not(None)
        )
        for blob in session.scalars(stmt.execution_options(yield_per=batch_size)):
            assert blob.wrapped_key is not None
            data_key = self._unwrap(blob.master_key_id, blob.id, blob.wrapped_key)
            blob.wrapped_key = self._wrap(self.keyring.current, blob.id, data_key)
            blob.master_key_id = self.keyring.current
            moved += 1
        return moved

    def _wrap(self, key_id: int, blob_id: str, data_key: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        aad = f"{blob_id}:{key_id}".encode()
        return nonce + AESGCM(self.keyring.keys[key_id]).encrypt(nonce, data_key, aad)

    def _unwrap(self, key_id: int, blob_id: str, wrapped: bytes) -> bytes:
        try:
            master = self.keyring.keys[key_id]
        except KeyError:
            raise KeyringError(f"master key version {key_id} is missing from the keyring") from None
        aad = f"{blob_id}:{key_id}".encode()
        return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], aad)
