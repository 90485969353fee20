"""Hypothesis properties of the submission parser.

1. No input makes it raise anything but its own refusal (`InvalidSubmission`).
2. Whatever it accepts, the attachments decode to exactly the bytes that were encoded.
"""

from __future__ import annotations

import contextlib
import email.policy
import re
from email.message import EmailMessage

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myhug.gateway.submission import InvalidSubmission, parse_submission, safe_filename
from tests.unit.gateway.test_submission_rules import message

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_refuse(raw: bytes) -> None:
    with contextlib.suppress(InvalidSubmission):
        parse_submission(raw)


@FAST
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_parsed_or_refused(raw: bytes) -> None:
    _parse_or_refuse(raw)


@FAST
@given(st.data())
def test_a_valid_message_with_bytes_spliced_in_is_parsed_or_refused(data: st.DataObject) -> None:
    raw = bytearray(message())
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(0, len(raw)))
        cut = data.draw(st.integers(0, 20))
        raw[at:at + cut] = data.draw(st.binary(max_size=30) | st.sampled_from(
            [b"\r\n", b"\r\n\r\n", b"--XYZ\r\n", b"=?utf-8?q?=0D?=", b"=?x?b?QQ==?=", b"\xff", b"\x00", b"\t",
             b"Content-Transfer-Encoding: quoted-printable\r\n", b"Content-Type: multipart/mixed\r\n"]))
    _parse_or_refuse(bytes(raw))


HEADER_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)


@FAST
@given(HEADER_TEXT, HEADER_TEXT)
def test_any_unicode_name_and_subject_round_trip_or_are_refused(name: str, subject: str) -> None:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["X-MyHUG-Patient-Id"] = "P-1"
    msg["X-MyHUG-Document-Id"] = "D-1"
    try:
        msg["X-MyHUG-Patient-Name"] = name
        msg["Subject"] = subject
    except ValueError:  # the library itself refuses line breaks when building
        return
    msg.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="a.pdf")
    try:
        raw = msg.as_bytes()
    except (ValueError, UnicodeError):
        return
    try:
        parsed = parse_submission(raw)
    except InvalidSubmission:
        return
    # Accepted means faithful: what the DPI wrote is what the physician reads (whitespace aside).
    # CPython's generator may put a space exactly at a fold between two encoded words, where RFC 2047
    # says a reader must drop it; so when a header was folded, only its other characters must survive.
    def faithful(header: bytes, read: str | None, written: str) -> bool:
        if read is None:
            return not written.strip()
        if re.search(header + rb":(?:[^\r]|\r\n )*?\?=\r\n =\?", raw):
            return "".join(read.split()) == "".join(written.split())
        return " ".join(read.split()) == " ".join(written.split())

    assert faithful(b"X-MyHUG-Patient-Name", parsed.patient_name, name)
    assert parsed.subject is None or faithful(b"Subject", parsed.subject, subject)


@FAST
@given(
    st.lists(
        st.tuples(
            st.binary(min_size=1, max_size=3000),
            st.sampled_from(["base64", "quoted-printable"]),
            st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=40)
            .filter(str.strip),
        ),
        min_size=1, max_size=4,
    )
)
def test_accepted_attachments_decode_to_exactly_the_encoded_bytes(attachments: list[tuple[bytes, str, str]]) -> None:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["X-MyHUG-Patient-Id"] = "P-1"
    msg["X-MyHUG-Document-Id"] = "D-1"
    msg.set_content("Lettre de sortie.")
    for data, cte, filename in attachments:
        msg.add_attachment(data, maintype="application", subtype="pdf", cte=cte, filename=filename)
    parsed = parse_submission(msg.as_bytes())
    assert [d.data for d in parsed.documents] == [data for data, _, _ in attachments]
    for document, (_, _, filename) in zip(parsed.documents, attachments, strict=True):
        assert (document.original_filename or "").strip() == filename.strip()
        assert document.filename == safe_filename(filename, document.filename)
        assert "/" not in document.filename and "\\" not in document.filename


@FAST
@given(st.binary(min_size=1, max_size=2000).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\x00" not in b))
def test_8bit_attachments_without_line_breaks_are_kept_verbatim(data: bytes) -> None:
    raw = message(b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n"
                  b'Content-Disposition: attachment; filename="x.bin"\r\n\r\n' + data + b"\r\n")
    assert parse_submission(raw).documents[0].data == data
