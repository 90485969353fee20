"""Envelope encryption at rest: AES-256-GCM under a rotatable master key. Pure: bytes and keys in, bytes out.

Each blob gets a fresh 256-bit data key. The data key is wrapped (AES-GCM)
by the current master key version; the keyring keeps older versions so that
old blobs stay readable until `rewrap` moves them to the current one. The
keyring also holds the key of the patient blind index (`patient_ref`), which
is never rotated because consents are looked up by it.

Sealing runs in-process: accepting a document costs no subprocess. Where the
sealed bytes are kept is `myhug.blobs`' business, not this module's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import AEADDecryptionContext, Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from myhug.errors import MyhugError, PermanentFailure


class KeyringError(MyhugError):
    """The master keyring is missing, unreadable or has unsafe permissions."""


class BlobUnavailable(PermanentFailure):
    """The sealed data was shredded, or its ciphertext does not authenticate."""


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


@dataclass(frozen=True)
class Sealed:
    """What sealing produces: the data key wrapped by a master key version, and the ciphertext."""

    master_key_id: int
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes


class Envelope:
    """Seals and opens bytes; `label` (the blob's id) is bound into both layers, so a ciphertext
    moved to another blob does not open."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def patient_ref(self, patient_id: str) -> str:
        """The blind index of a DPI patient id: HMAC-SHA256, hex."""
        return hmac.new(self.keyring.index_key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def seal(self, plaintext: bytes, label: str) -> Sealed:
        """Encrypt `plaintext` under a fresh data key, wrapped by the current master key."""
        data_key = AESGCM.generate_key(256)
        nonce = secrets.token_bytes(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, label.encode())
        key_id = self.keyring.current
        return Sealed(key_id, self._wrap(key_id, label, data_key), nonce, ciphertext)

    def open(self, sealed: Sealed, label: str) -> bytes:
        """Decrypt; raises `BlobUnavailable` if the ciphertext or its key does not authenticate."""
        try:
            data_key = self._unwrap(sealed.master_key_id, label, sealed.wrapped_key)
            return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, label.encode())
        except InvalidTag:
            raise BlobUnavailable(f"sealed data {label} does not authenticate") from None

    def open_pieces(self, sealed: Sealed, label: str, length: int, read: Callable[[int, int], bytes],
                    piece: int = 1 << 20) -> Iterator[bytes]:
        """Decrypt a big ciphertext `piece` bytes at a time, never holding it whole.

        `sealed.ciphertext` is not used: `read(start, size)` gives the
        ciphertext's bytes (of `length` in all, GCM tag last), as a database
        reads a slice of a column. The whole is authenticated first, in a pass
        that keeps no plaintext, so that no piece of a tampered blob is given
        out: `BlobUnavailable` is raised here, before the first piece. The
        second pass checks the tag again; if the bytes changed between the
        passes, it raises, and the half-sent file is broken, not passed as good.
        """
        try:
            data_key = self._unwrap(sealed.master_key_id, label, sealed.wrapped_key)
        except InvalidTag:
            raise BlobUnavailable(f"the key of sealed data {label} does not authenticate") from None
        body = length - 16
        if body < 0:
            raise BlobUnavailable(f"sealed data {label} is truncated")
        tag = read(body, 16)

        def decryptor() -> AEADDecryptionContext:
            opener = Cipher(algorithms.AES(data_key), modes.GCM(sealed.nonce, tag)).decryptor()
            opener.authenticate_additional_data(label.encode())
            return opener

        def finish(opener: AEADDecryptionContext) -> None:
            try:
                opener.finalize()
            except InvalidTag:
                raise BlobUnavailable(f"sealed data {label} does not authenticate") from None

        check = decryptor()
        for start in range(0, body, piece):
            check.update(read(start, min(piece, body - start)))
        finish(check)

        def pieces() -> Iterator[bytes]:
            opener = decryptor()
            for start in range(0, body, piece):
                yield opener.update(read(start, min(piece, body - start)))
            finish(opener)
        return pieces()

    def rewrap(self, master_key_id: int, wrapped_key: bytes, label: str) -> tuple[int, bytes]:
        """The data key re-wrapped under the current master key: (current key id, wrapped key)."""
        data_key = self._unwrap(master_key_id, label, wrapped_key)
        return self.keyring.current, self._wrap(self.keyring.current, label, data_key)

    def _wrap(self, key_id: int, label: str, data_key: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        aad = f"{label}:{key_id}".encode()
        return nonce + AESGCM(self.keyring.keys[key_id]).encrypt(nonce, data_key, aad)

    def _unwrap(self, key_id: int, label: str, wrapped: bytes) -> bytes:
        try:
            master = self.keyring.keys[key_id]
        except KeyError:
            raise KeyringError(f"master key version {key_id} is missing from the keyring") from None
        aad = f"{label}:{key_id}".encode()
        return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], aad)
