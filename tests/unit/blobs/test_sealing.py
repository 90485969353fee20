import os
from pathlib import Path

import pytest

from myhug.blobs.models import SealedBlob
from myhug.blobs.store import BlobUnavailable, Sealer
from myhug.crypto.envelope import Keyring, KeyringError


class _Collector:
    """Stands in for a Session: `seal` only calls `add`."""

    def __init__(self) -> None:
        self.added: list[SealedBlob] = []

    def add(self, obj: SealedBlob) -> None:
        self.added.append(obj)


def _seal(sealer: Sealer, data: bytes) -> SealedBlob:
    collector = _Collector()
    return sealer.seal(collector, data)  # type: ignore[arg-type]


def test_seal_round_trip_and_no_plaintext_in_blob() -> None:
    sealer = Sealer(Keyring.generate())
    secret = b"Patient Jean Exemple, ne le 1950-01-31"
    blob = _seal(sealer, secret)
    assert secret not in (blob.ciphertext or b"")
    assert secret not in (blob.wrapped_key or b"")
    assert sealer.open(blob) == secret


def test_each_blob_gets_a_fresh_data_key() -> None:
    sealer = Sealer(Keyring.generate())
    a, b = _seal(sealer, b"same"), _seal(sealer, b"same")
    assert a.ciphertext != b.ciphertext and a.wrapped_key != b.wrapped_key


def test_tampered_or_moved_ciphertext_does_not_open() -> None:
    sealer = Sealer(Keyring.generate())
    blob = _seal(sealer, b"document")
    assert blob.ciphertext is not None
    blob.ciphertext = bytes([blob.ciphertext[0] ^ 1]) + blob.ciphertext[1:]
    with pytest.raises(BlobUnavailable):
        sealer.open(blob)
    other = _seal(sealer, b"other")
    other.id = "SOMEOTHERID000000000"  # ciphertext is bound to its row id
    with pytest.raises(BlobUnavailable):
        sealer.open(other)


def test_shredded_blob_cannot_be_opened() -> None:
    sealer = Sealer(Keyring.generate())
    blob = _seal(sealer, b"document")
    Sealer.shred(blob)
    assert blob.ciphertext is None and blob.wrapped_key is None and blob.shredded_at is not None
    with pytest.raises(BlobUnavailable, match="erased"):
        sealer.open(blob)


def test_rotation_keeps_old_blobs_readable(tmp_path: Path) -> None:
    keyring = Keyring.generate()
    sealer = Sealer(keyring)
    old = _seal(sealer, b"old")
    keyring.rotate()
    new = _seal(sealer, b"new")
    assert (old.master_key_id, new.master_key_id) == (1, 2)
    assert sealer.open(old) == b"old" and sealer.open(new) == b"new"


def test_keyring_file_is_0600_and_refused_if_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.json"
    keyring = Keyring.generate()
    keyring.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Keyring.load(path).keys == keyring.keys
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="readable by others"):
        Keyring.load(path)


def test_patient_ref_is_stable_keyed_and_not_the_id() -> None:
    keyring = Keyring.generate()
    ref = Sealer(keyring).patient_ref("P-1001")
    assert ref == Sealer(keyring).patient_ref("P-1001")
    assert ref != Sealer(Keyring.generate()).patient_ref("P-1001")
    assert "P-1001" not in ref and len(ref) == 64




def test_open_ids_reads_several_blobs_in_one_statement_and_names_a_missing_one(tmp_path: Path) -> None:
    from sqlalchemy import event

    from myhug.db.session import Database
    from myhug.schema import upgrade

    db = Database(f"sqlite:///{tmp_path / 'blobs.db'}")
    upgrade(db.engine)
    sealer = Sealer(Keyring.generate())
    with db.transaction() as session:
        ids = [sealer.seal(session, data).id for data in (b"meta", b"lettre", b"annexe")]
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with db.reading() as session:
        assert sealer.open_ids(session, ids) == dict(zip(ids, (b"meta", b"lettre", b"annexe"), strict=True))
    assert sum("sealed_blob" in sql for sql in statements) == 1
    with db.reading() as session, pytest.raises(BlobUnavailable, match="NOSUCHBLOB"):
        sealer.open_ids(session, [ids[0], "NOSUCHBLOB"])
