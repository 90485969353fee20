"""Opening a sealed blob in pieces: the same bytes as a whole opening, and nothing of a tampered one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myhug.crypto.envelope import BlobUnavailable, Envelope, Keyring


def reader(ciphertext: bytes, calls: list[tuple[int, int]] | None = None):  # type: ignore[no-untyped-def]
    def read(start: int, size: int) -> bytes:
        if calls is not None:
            calls.append((start, size))
        return ciphertext[start : start + size]
    return read


@settings(max_examples=40, deadline=None)
@given(plaintext=st.binary(max_size=5000), piece=st.integers(min_value=1, max_value=700))
def test_pieces_join_to_the_plaintext_and_each_read_is_a_slice(plaintext: bytes, piece: int) -> None:
    envelope = Envelope(Keyring.generate())
    sealed = envelope.seal(plaintext, "blob-1")
    calls: list[tuple[int, int]] = []
    pieces = envelope.open_pieces(sealed, "blob-1", len(sealed.ciphertext), reader(sealed.ciphertext, calls), piece)
    assert b"".join(pieces) == plaintext == envelope.open(sealed, "blob-1")
    assert all(size <= max(piece, 16) for _, size in calls)  # never the whole at once (16: the tag)


def test_a_tampered_blob_raises_before_the_first_piece() -> None:
    envelope = Envelope(Keyring.generate())
    sealed = envelope.seal(b"lettre de sortie " * 1000, "blob-1")
    for position in (0, len(sealed.ciphertext) // 2, len(sealed.ciphertext) - 1):  # start, middle, the tag
        tampered = bytearray(sealed.ciphertext)
        tampered[position] ^= 1
        with pytest.raises(BlobUnavailable):
            envelope.open_pieces(sealed, "blob-1", len(tampered), reader(bytes(tampered)), 100)
    with pytest.raises(BlobUnavailable):  # moved to another blob's id: the label is bound in
        envelope.open_pieces(sealed, "blob-2", len(sealed.ciphertext), reader(sealed.ciphertext), 100)


def test_bytes_that_change_between_the_two_passes_break_the_stream() -> None:
    envelope = Envelope(Keyring.generate())
    sealed = envelope.seal(b"x" * 1000, "blob-1")
    passes = {"n": 0}

    def read(start: int, size: int) -> bytes:
        if start == 0:
            passes["n"] += 1
        data = bytearray(sealed.ciphertext[start : start + size])
        if passes["n"] == 2 and start == 0:
            data[0] ^= 1
        return bytes(data)

    pieces = envelope.open_pieces(sealed, "blob-1", len(sealed.ciphertext), read, 100)
    with pytest.raises(BlobUnavailable):
        list(pieces)
