"""The MIME writer of the HIN message: what the e-mail package reads back is exactly what was written."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myhug.mail import mime

# Names and subjects as a DPI may send them (safe_filename has already removed controls and separators).
names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters='/\\"'),
                min_size=1, max_size=120).filter(lambda s: s.strip() == s and s)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=400)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def document(name: str, data: bytes) -> bytes:
    return mime.leaf([("Content-Type", "application/pdf"), ("Content-Disposition", "attachment", {"filename": name}),
                      ("Content-Transfer-Encoding", "base64")], mime.base64_body(data))


def text(body: str, eight_bit: bool = False) -> bytes:
    return mime.text_leaf(body, eight_bit=eight_bit)


@settings(max_examples=150, deadline=None)
@given(names, st.binary(max_size=3000), texts, st.booleans())
def test_a_message_reads_back_as_written(name: str, data: bytes, body: str, eight_bit: bool) -> None:
    raw = mime.multipart("mixed", [text(body, eight_bit), document(name, data)], [("Subject", "Lettre"), ("From", "a@hug.ch")],
                         {"protected_headers": "v1"})
    message = parse(raw)
    assert message.get_param("protected-headers") == "v1" and message["Subject"] == "Lettre"
    note, attachment = message.iter_parts()
    assert note.get_content().replace("\r\n", "\n") == body + ("" if body.endswith("\n") else "\n")
    assert attachment.get_filename() == name
    assert attachment.get_payload(decode=True) == data
    assert not message.defects and not note.defects and not attachment.defects


@settings(max_examples=100, deadline=None)
@given(names, texts)
def test_every_line_is_crlf_terminated_and_at_most_998_octets(name: str, body: str) -> None:
    raw = mime.multipart("mixed", [text(body), document(name, b"x" * 5000)], [("Subject", name)])
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and all(b"\n" not in line and b"\r" not in line for line in lines)
    assert max(len(line) for line in lines) <= 998


def test_the_boundary_never_occurs_in_a_part(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tokens = iter(["a" * 32, "b" * 32])
    monkeypatch.setattr(mime.secrets, "token_hex", lambda n: next(tokens))
    part = mime.leaf([("Content-Type", "text/plain")], b"--=_" + b"a" * 32 + b"\r\n")
    raw = mime.multipart("mixed", [part])
    assert b"boundary=\"=_" + b"b" * 32 + b'"' in raw
    assert parse(raw).get_payload()[0].get_content() == "--=_" + "a" * 32 + "\r\n"


def test_base64_lines_are_76_characters() -> None:
    body = mime.base64_body(bytes(range(256)) * 10)
    lines = body.split(b"\r\n")
    assert {len(line) for line in lines[:-2]} == {76} and lines[-1] == b""


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["Subject", "Content-Type"]), st.text(max_size=100),
       st.dictionaries(st.sampled_from(["name", "charset", "protected_headers"]), st.text(max_size=60), max_size=2))
def test_a_plain_header_is_what_the_email_package_would_read_back(name: str, value: str, params: dict[str, str]) -> None:
    """The one-line shortcut and the e-mail package agree on every header the shortcut takes."""
    plain = mime._plain(name, value, params)
    if plain is None:
        return
    shortcut, package = parse(plain + b"\r\n"), parse(mime._encoded(name, value, params) + b"\r\n")
    # The package may fold before the value ("Content-Type:" CRLF SP "0000…; name=…"): it reads back with a
    # leading space, which RFC 5322 unfolding makes insignificant (Hypothesis found it in CI).
    assert str(shortcut[name]).lstrip() == str(package[name]).lstrip()
    for key in params:
        assert shortcut.get_param(key.replace("_", "-"), header=name) == \
            package.get_param(key.replace("_", "-"), header=name)


_ASCII = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=70)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["multipart/report", "multipart/encrypted", "application/octet-stream", "a/b"]),
       st.dictionaries(st.sampled_from(["boundary", "report_type", "protocol", "name"]), _ASCII, max_size=4))
def test_a_folded_plain_header_is_what_the_email_package_would_read_back(value: str, params: dict[str, str]) -> None:
    """Folded between its parameters, a long Content-Type reads back as the e-mail package's own."""
    plain = mime._plain("Content-Type", value, params)
    if plain is None:
        return
    assert all(len(line) <= 78 for line in plain.split(b"\r\n"))
    shortcut, package = parse(plain + b"\r\n"), parse(mime._encoded("Content-Type", value, params) + b"\r\n")
    assert shortcut.get_content_type() == package.get_content_type()
    for key in params:
        assert shortcut.get_param(key.replace("_", "-")) == package.get_param(key.replace("_", "-"))


def test_a_multipart_content_type_with_its_boundary_is_folded_not_parsed() -> None:
    boundary = "=_" + "b" * 64
    folded = mime._plain("Content-Type", "multipart/report", {"report_type": "delivery-status", "boundary": boundary})
    assert folded == (b'Content-Type: multipart/report; report-type="delivery-status";\r\n'
                      b' boundary="' + boundary.encode() + b'"\r\n')
    assert mime._plain("Content-Type", "a/b", {"name": "x" * 80}) is None  # no fold brings it within a line


def test_non_ascii_long_or_quoted_values_go_through_the_email_package() -> None:
    assert mime._plain("Subject", "Lettre de sortie", {}) == b"Subject: Lettre de sortie\r\n"
    assert mime._plain("Subject", "Müller", {}) is None
    assert mime._plain("Subject", "x" * 80, {}) is None
    assert mime._plain("Subject", "a\r\nBcc: evil@example.org", {}) is None
    assert mime._plain("Content-Disposition", "attachment", {"filename": 'a".pdf'}) is None
    assert mime._plain("Content-Type", ";0*", {}) is None  # not a MIME type (the e-mail package cannot read it)
    assert mime._plain("Content-Type", "text/plain", {}) == b"Content-Type: text/plain\r\n"
    with pytest.raises(ValueError, match="linefeed"):  # never a header injection
        mime.header_block([("Subject", "a\r\nBcc: evil@example.org")])


def test_eight_bit_text_is_written_as_is_and_a_long_line_falls_back_to_quoted_printable() -> None:
    assert "Patient Démo".encode() in mime.text_leaf("Patient Démo\n", eight_bit=True)
    assert b"Content-Transfer-Encoding: 8bit" in mime.text_leaf("Patient Démo\n", eight_bit=True)
    long_line = mime.text_leaf("é" * 600 + "\n", eight_bit=True)  # 1200 octets
    assert b"quoted-printable" in long_line and max(map(len, long_line.split(b"\r\n"))) <= 998
    assert b"quoted-printable" in mime.text_leaf("Patient Démo\n")  # over SMTP in the open: 7-bit


def streamed(name: str, data: bytes) -> mime.StreamedLeaf:
    return mime.StreamedLeaf([("Content-Type", "application/pdf"), ("Content-Disposition", "attachment", {"filename": name}),
                              ("Content-Transfer-Encoding", "base64")],
                             lambda: mime.base64_chunks(data, lines_per_chunk=3))


@settings(max_examples=150, deadline=None)
@given(names, st.binary(max_size=3000), texts)
def test_a_streamed_attachment_is_written_as_the_joined_one(name: str, data: bytes, body: str) -> None:
    # The HIN route encodes an attachment while gpg reads it: the bytes must be those of the joined writer.
    joined = mime.multipart("mixed", [text(body), document(name, data)])
    boundary = parse(joined).get_boundary()
    head, chunks = mime.multipart_chunks("mixed", [text(body), streamed(name, data)])
    raw = head + b"".join(chunks)
    assert raw.replace(parse(raw).get_boundary().encode(), boundary.encode()) == joined  # type: ignore[union-attr]
    assert parse(raw).get_payload()[1].get_payload(decode=True) == data  # type: ignore[index]


def test_a_streamed_body_holding_an_underscore_is_refused() -> None:
    # Every boundary holds '_' and streamed bodies are not searched for it: one that could hold it is an error.
    leaf = mime.StreamedLeaf([("Content-Type", "text/plain")], lambda: [b"fine\r\n", b"not_fine\r\n"])
    _, chunks = mime.multipart_chunks("mixed", [leaf])
    with pytest.raises(ValueError, match="'_'"):
        b"".join(chunks)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=50), max_size=8), st.lists(st.integers(min_value=1, max_value=70), min_size=1))
def test_the_chunk_reader_reads_the_pieces_joined_whatever_the_read_size(pieces: list[bytes], sizes: list[int]) -> None:
    reader = mime.ChunkReader(iter(pieces))
    out, n = b"", 0
    while block := reader.read(sizes[n % len(sizes)]):
        assert len(block) <= sizes[n % len(sizes)]
        out += block
        n += 1
    assert out == b"".join(pieces)


class TinySpool(mime.SpooledMessage):
    IN_MEMORY = 100  # to the temporary file after 100 octets
    CHUNK = 64


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"", b".", b"..x", b"abc", b"x" * 90, b"=_", b" "]), max_size=40))
def test_a_spooled_message_reads_back_whole_in_pieces_that_end_lines(lines: list[bytes]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    message = TinySpool(b"Subject: x\r\n\r\n")
    try:
        for start in range(0, len(body), 37):  # written in pieces that cut lines and CRLFs
            message.write(body[start:start + 37])
        chunks = list(message.chunks())
        assert b"".join(chunks) == b"Subject: x\r\n\r\n" + body == message.as_bytes()
        assert message.size == len(b"Subject: x\r\n\r\n" + body)
        assert all(chunk.endswith(b"\r\n") for chunk in chunks)  # each piece ends a line: dot-stuffing needs it
    finally:
        message.close()
