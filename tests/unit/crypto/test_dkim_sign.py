"""The gateway's DKIM signer: whatever message it signs, dkimpy verifies (relaxed/simple, header block only parsed)."""

from __future__ import annotations

import hashlib

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myhug.crypto.dkim import DkimSigner, SimpleBodyHash
from myhug.crypto.keys import create_dkim_key, dkim_dns_record


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[DkimSigner, bytes]:
    key = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    create_dkim_key(key)
    return DkimSigner(key, "myhug.example", "mail"), dkim_dns_record(key).encode()


header_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=60)
body_lines = st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=30)


@settings(max_examples=60, deadline=None)
@given(header_values, header_values, body_lines, st.booleans())
def test_dkimpy_verifies_every_signed_message(signer: tuple[DkimSigner, bytes], subject: str, folded: str,
                                               lines: list[bytes], lf_only: bool) -> None:
    gateway, record = signer
    newline = b"\n" if lf_only else b"\r\n"  # the signer makes line ends CRLF itself
    message = newline.join([
        b"From: myHUG <receipts@myhug.example>", b"To: dpi@hug.example", b"Subject: " + subject.encode(),
        b"X-MyHUG-Event: relayed", b"X-MyHUG-Document-Id: " + folded.encode() + newline + b"\t" + folded.encode(),
        b"", *lines, b""])
    signed = gateway.sign(message)
    assert b"c=relaxed/simple" in signed.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ")
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    # The body as sent is the body as signed: a changed byte fails.
    if lines and any(lines):
        changed = signed[:-3] + bytes([signed[-3] ^ 1]) + signed[-2:]  # the body's last byte, flipped
        assert not dkim.verify(changed, dnsfunc=lambda name, timeout=5: record)


def test_a_message_without_a_body_is_signed(signer: tuple[DkimSigner, bytes]) -> None:
    gateway, record = signer
    signed = gateway.sign(b"From: a@myhug.example\r\nSubject: x\r\n")
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"\r\n", b"\r", b"\n", b" ", b"x\r\n"]), max_size=12).map(b"".join),
       st.lists(st.integers(min_value=0, max_value=40), max_size=6))
def test_the_simple_body_hash_is_dkimpys_however_the_body_is_cut(body: bytes, cuts: list[int]) -> None:
    # Pieces cut anywhere, a CRLF split between two included: the streamed HIN message is hashed so.
    policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/simple")
    hasher = SimpleBodyHash()
    start = 0
    for cut in sorted(min(c, len(body)) for c in cuts):
        hasher.update(body[start:cut])
        start = max(start, cut)
    hasher.update(memoryview(body)[start:])
    assert hasher.digest() == hashlib.sha256(policy.canonicalize_body(body)).digest()
