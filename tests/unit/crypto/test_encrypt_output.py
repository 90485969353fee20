"""What the HIN route's encryption leaves behind: compressed ciphertext the physician decrypts, no temporary file."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import BinaryIO

import pytest

from myhug.crypto.openpgp import OpenPgp
from myhug.delivery.document import Document
from myhug.hin.message import HinContent, pgp_mime
from tests.pgp_keys import make_keypair

SENDER = "receipts@myhug.localhost"


def content(data: bytes) -> HinContent:
    return HinContent(document_id="DOC-1", document_type=None, patient_id="P-1", patient_name="Jean Exemple",
                      patient_birthdate=None, subject=None, note=None,
                      documents=[Document("lettre.pdf", "application/pdf", data)])


def test_the_ciphertext_is_compressed_and_decrypts_to_the_plaintext(tmp_path: Path) -> None:
    pgp = OpenPgp(tmp_path / "gw")
    physician = make_keypair(tmp_path / "physician", "a@hin.ch")
    try:
        fingerprint = pgp.import_key(physician.public).fingerprint
        plaintext = b"Lettre de sortie\n" * 20_000  # 340 kB that compress well
        output = tmp_path / "out.asc"
        pgp.encrypt(io.BytesIO(plaintext), output, fingerprint, sign_as=pgp.signing_key(SENDER))
        armored = output.read_bytes()
        assert len(armored) < len(plaintext) // 10  # compressed before encryption (armour alone adds a third)
        packets = subprocess.run(["gpg", "--homedir", str(physician.home), "--batch", "--list-packets"],
                                 input=armored, capture_output=True, timeout=60).stdout.decode()
        assert ":compressed packet: algo=1" in packets  # ZIP: raw deflate, cheaper than ZLIB for gpg
        assert physician.decrypt(armored) == plaintext
    finally:
        pgp.stop_agent()


def test_encrypting_neither_reads_nor_rewrites_the_shared_random_seed_file(tmp_path: Path) -> None:
    """Concurrent gpg processes queue on that file's lock for 0.25 s and more, and share one seed."""
    pgp = OpenPgp(tmp_path / "gw")
    physician = make_keypair(tmp_path / "physician", "a@hin.ch")
    try:
        fingerprint = pgp.import_key(physician.public).fingerprint
        signer = pgp.signing_key(SENDER)
        seed = pgp.home / "random_seed"
        seed.write_bytes(b"\0" * 600)  # libgcrypt's pool size: a seed file gpg would read, then rewrite
        before = seed.stat().st_mtime_ns
        output = tmp_path / "out.asc"
        for _ in range(3):
            pgp.encrypt(io.BytesIO(b"Lettre de sortie\n"), output, fingerprint, sign_as=signer)
        assert seed.read_bytes() == b"\0" * 600 and seed.stat().st_mtime_ns == before
        assert physician.decrypt(output.read_bytes()) == b"Lettre de sortie\n"
    finally:
        pgp.stop_agent()


def test_pgp_mime_removes_its_temporary_file_whether_encryption_succeeds_or_fails() -> None:
    seen: list[Path] = []

    def encrypt(source: BinaryIO | io.RawIOBase, output: Path) -> None:
        seen.append(output)
        assert output.exists() and output.stat().st_mode & 0o077 == 0  # mkstemp's 0600: only ciphertext lands here
        output.write_bytes(b"-----BEGIN PGP MESSAGE-----\n\nabc\n-----END PGP MESSAGE-----\n")

    message = pgp_mime(content(b"%PDF-1.4\n"), encrypt, sender=SENDER, recipient="a@hin.ch",
                       message_id="<x@myhug.localhost>", receipts_address=SENDER)
    try:
        assert b"-----BEGIN PGP MESSAGE-----\r\n" in b"".join(message.body_chunks())
    finally:
        message.close()

    def failing(source: BinaryIO | io.RawIOBase, output: Path) -> None:
        seen.append(output)
        raise RuntimeError("gpg failed")

    with pytest.raises(RuntimeError):
        pgp_mime(content(b"%PDF-1.4\n"), failing, sender=SENDER, recipient="a@hin.ch",
                 message_id="<y@myhug.localhost>", receipts_address=SENDER)
    assert len(seen) == 2 and not any(path.exists() for path in seen)
