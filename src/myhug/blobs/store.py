"""Sealed blob storage: documents and metadata at rest, as `sealed_blob` rows sealed by `crypto.envelope`.

`BlobStore` is what the rest of the gateway needs of it; `Sealer` keeps the
blobs in the database. Crypto-shredding erases a blob's wrapped key and
ciphertext and leaves a tombstone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from myhug.blobs.models import SealedBlob
from myhug.crypto.envelope import BlobUnavailable, Envelope, Keyring, Sealed
from myhug.db.base import new_id, utcnow
from myhug.db.session import Database

__all__ = ["BlobStore", "BlobUnavailable", "PreparedBlob", "Sealer"]


@dataclass(frozen=True)
class PreparedBlob:
    """Plaintext sealed under a fresh data key and not stored yet.

    The encryption of a large document then runs before the transaction
    that stores it, not while it holds the database's write lock, and the
    plaintext can be let go before the row is written.
    """

    id: str
    sealed: Sealed
    size: int  # of the plaintext


class BlobStore(Protocol):
    """Sealed storage of bytes, in the caller's transaction."""

    def patient_ref(self, patient_id: str) -> str:
        """The blind index under which a patient's id may be looked up without being stored."""
        ...

    def seal(self, session: Session, plaintext: bytes) -> SealedBlob:
        """Store `plaintext` sealed; the row's `id` names it."""
        ...

    def prepare(self, plaintext: bytes) -> PreparedBlob:
        """Encrypt `plaintext` for a later `store`, outside any transaction."""
        ...

    def store(self, session: Session, prepared: PreparedBlob) -> SealedBlob:
        """Store what `prepare` encrypted; its `id` is the row's."""
        ...

    def open_id(self, session: Session, blob_id: str) -> bytes:
        """The plaintext of a blob; raises `BlobUnavailable` if absent, shredded or tampered with."""
        ...


class Sealer:
    """The `BlobStore` of the gateway: blobs in the `sealed_blob` table."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.envelope = Envelope(keyring)

    def patient_ref(self, patient_id: str) -> str:
        return self.envelope.patient_ref(patient_id)

    def seal(self, session: Session, plaintext: bytes) -> SealedBlob:
        return self.store(session, self.prepare(plaintext))

    def prepare(self, plaintext: bytes) -> PreparedBlob:
        blob_id = new_id()
        return PreparedBlob(blob_id, self.envelope.seal(plaintext, blob_id), len(plaintext))

    def store(self, session: Session, prepared: PreparedBlob) -> SealedBlob:
        sealed = prepared.sealed
        blob = SealedBlob(id=prepared.id, master_key_id=sealed.master_key_id, wrapped_key=sealed.wrapped_key,
                          nonce=sealed.nonce, ciphertext=sealed.ciphertext, size=prepared.size, created_at=utcnow())
        session.add(blob)
        return blob

    def open(self, blob: SealedBlob) -> bytes:
        """Decrypt a blob; raises `BlobUnavailable` if shredded or tampered with."""
        if blob.wrapped_key is None or blob.ciphertext is None:
            raise BlobUnavailable(f"blob {blob.id} was erased")
        return self.envelope.open(Sealed(blob.master_key_id, blob.wrapped_key, blob.nonce, blob.ciphertext), blob.id)

    def open_id(self, session: Session, blob_id: str) -> bytes:
        return self.open_ids(session, [blob_id])[blob_id]

    def open_pieces(self, db: Database, blob_id: str) -> tuple[int, Iterator[bytes]]:
        """(size, plaintext pieces) of a big blob, for streaming it; `BlobUnavailable` if absent or tampered with.

        The ciphertext is read from the database one slice at a time, each in a
        short read of its own (SQLite's incremental blob I/O, PostgreSQL's
        `substr`): the process never holds the file, nor the driver's copy of
        it (PostgreSQL sends a bytea as hex text, twice its size).
        """
        with db.reading() as session:
            row = session.execute(
                select(SealedBlob.master_key_id, SealedBlob.wrapped_key, SealedBlob.nonce,
                       func.length(SealedBlob.ciphertext)).where(SealedBlob.id == blob_id)
            ).one_or_none()
        if row is None or row[1] is None or row[3] is None:
            raise BlobUnavailable(f"blob {blob_id} not found or erased")
        master_key_id, wrapped_key, nonce, length = row

        def read(start: int, size: int) -> bytes:
            with db.reading() as session:
                if db.is_sqlite:  # SQLite's substr would load the whole value for each slice: its blob I/O does not
                    rowid = session.scalar(select(text("rowid")).select_from(SealedBlob).where(SealedBlob.id == blob_id))
                    raw = session.connection().connection.dbapi_connection
                    data = None
                    if rowid is not None and raw is not None:
                        with raw.blobopen("sealed_blob", "ciphertext", rowid, readonly=True) as blob:
                            blob.seek(start)
                            data = blob.read(size)
                else:
                    data = session.scalar(select(func.substr(SealedBlob.ciphertext, start + 1, size))
                                          .where(SealedBlob.id == blob_id))
            if data is None or len(data) != size:
                raise BlobUnavailable(f"blob {blob_id} changed while it was read")
            return bytes(data)

        pieces = self.envelope.open_pieces(Sealed(master_key_id, wrapped_key, nonce, b""), blob_id, int(length), read)
        return int(length) - 16, pieces  # GCM's tag is 16 bytes

    def open_ids(self, session: Session, blob_ids: list[str]) -> dict[str, bytes]:
        """The plaintexts of several blobs, read in one statement; raises `BlobUnavailable` if one is missing."""
        blobs = {blob.id: blob for blob in session.scalars(select(SealedBlob).where(SealedBlob.id.in_(blob_ids)))}
        missing = [blob_id for blob_id in blob_ids if blob_id not in blobs]
        if missing:
            raise BlobUnavailable(f"blob {missing[0]} not found")
        return {blob_id: self.open(blobs[blob_id]) for blob_id in blob_ids}

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
            blob.master_key_id, blob.wrapped_key = self.envelope.rewrap(blob.master_key_id, blob.wrapped_key, blob.id)
            moved += 1
        return moved
