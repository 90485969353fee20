"""The skeleton parse of a submission (base64 runs taken out, attachments decoded from the message's own
bytes) gives exactly what parsing the whole message gives: the same submission or the same refusal."""

from __future__ import annotations

import base64
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myhug.gateway import submission
from myhug.gateway.submission import InvalidSubmission, ParsedSubmission, parse_submission

HEAD = (b"From: dpi@hug.localhost\r\nTo: a@b.ch\r\nX-MyHUG-Patient-Id: P-1\r\nX-MyHUG-Document-Id: D-1\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n")
RUN_LINE = st.sampled_from([b"QUJD", b"QUJDRA==", b"QQ==", b"abc", b"A" * 76, b"x/+9", b"="])


def b64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def attachment(body: bytes, cte: bytes = b"base64", kind: bytes = b"application/pdf") -> bytes:
    return (b"--XYZ\r\nContent-Type: " + kind + b"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n"
            b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body)


def note(body: bytes, cte: bytes) -> bytes:
    return b"--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: " + cte + b"\r\n\r\n" + body


PARTS = st.one_of(
    st.binary(min_size=1, max_size=4000).map(lambda d: attachment(b64_lines(d))),  # a run: elided
    st.lists(RUN_LINE, min_size=1, max_size=40).map(lambda ls: attachment(b"".join(x + b"\r\n" for x in ls))),
    st.lists(RUN_LINE, min_size=1, max_size=40).map(lambda ls: note(b"".join(x + b"\r\n" for x in ls), b"7bit")),
    st.lists(RUN_LINE, min_size=1, max_size=40).map(lambda ls: note(b"".join(x + b"\r\n" for x in ls),
                                                                      b"quoted-printable")),
    st.lists(RUN_LINE, min_size=1, max_size=40).map(lambda ls: attachment(b"".join(x + b"\r\n" for x in ls),
                                                                            b"7bit")),
    st.binary(min_size=1, max_size=1500).map(lambda d: note(b64_lines(d), b"base64")),
    st.binary(min_size=1, max_size=1500).map(lambda d: attachment(b64_lines(d) + b" \t\r\n" + b64_lines(d))),
)
AROUND = st.lists(RUN_LINE, max_size=30).map(lambda ls: b"".join(x + b"\r\n" for x in ls))


def outcome(raw: bytes, *, whole: bool, window: int = 1 << 20) -> ParsedSubmission | str:
    """Whole: the e-mail package reads every line and each body is decoded at once (the bodies here are far
    under the 1 MB window), as before the skeleton parse. Otherwise the skeleton parse, with `window`."""
    original = submission._DECODE_WINDOW
    submission._DECODE_WINDOW = window
    try:
        return submission._parse(raw, None) if whole else parse_submission(raw)
    except InvalidSubmission as exc:
        return str(exc)
    finally:
        submission._DECODE_WINDOW = original


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(AROUND, st.lists(PARTS, min_size=1, max_size=4), AROUND, st.booleans(), st.sampled_from([1 << 20, 5, 78, 333]))
def test_the_skeleton_parse_is_the_whole_parse(preamble: bytes, parts: list[bytes], epilogue: bytes,
                                               closed: bool, window: int) -> None:
    raw = HEAD + preamble + b"".join(p + b"\r\n" for p in parts) + (b"--XYZ--\r\n" + epilogue if closed else b"")
    assert outcome(raw, whole=False, window=window) == outcome(raw, whole=True)


def test_a_large_attachment_decodes_from_the_message_without_the_parser_reading_its_lines() -> None:
    data = os.urandom(300_000)
    raw = HEAD + attachment(b64_lines(data)) + b"\r\n--XYZ--\r\n"
    elided = submission._Elided(raw)
    assert len(elided.runs) == 1 and len(elided.skeleton) < 1000  # the parser sees a few hundred bytes
    parsed = parse_submission(raw)
    assert isinstance(parsed, ParsedSubmission) and parsed.documents[0].data == data


def test_padding_inside_a_large_body_is_refused_as_by_one_strict_decode() -> None:
    # Windows decode separately: padding that ends a window but not the body must still be refused.
    lines = b64_lines(os.urandom(57 * 40)).split(b"\r\n")
    lines[20] = b"QQ=="
    raw = HEAD + attachment(b"\r\n".join(lines)) + b"\r\n--XYZ--\r\n"
    assert outcome(raw, whole=True) == "attachment 1: invalid base64"
    for window in (1 << 20, 78 * 21, 78 * 20 + 4, 4):
        assert outcome(raw, whole=False, window=window) == "attachment 1: invalid base64", window


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([b"A", b"=", b"\r\n", b" ", b"Q", b"!", b"QUJD", b"=="]), max_size=14).map(b"".join),
       st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=20))
def test_the_windowed_decode_has_the_verdict_of_one_strict_decode(body: bytes, window: int, split: int) -> None:
    # CPython's strict rules, stray '=' after a complete quad included, whatever the windows and pieces.
    import binascii

    try:
        expected: bytes | None = binascii.a2b_base64(body.translate(None, b" \t\r\n"), strict_mode=True)
    except binascii.Error:
        expected = None
    original = submission._DECODE_WINDOW
    submission._DECODE_WINDOW = window
    try:
        got: bytes | None = submission._decode_base64([body[:split], memoryview(body)[split:]], "x")
    except InvalidSubmission:
        got = None
    finally:
        submission._DECODE_WINDOW = original
    assert got == expected


class _NoCache:
    """The default policy's own registry, in place of the per-parse cache: the reference."""

    def __new__(cls) -> object:  # type: ignore[misc]
        import email.policy

        return email.policy.default.header_factory


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60), st.text(max_size=60), st.sampled_from([b"application/pdf", b"text/plain; charset=utf-8",
                                                                     b"APPLICATION/PDF; name=\"x\"", b"bad type"]),
       st.binary(min_size=1, max_size=200))
def test_the_header_cache_gives_the_parse_without_it(name: str, subject: str, kind: bytes, data: bytes) -> None:
    # Header objects are remembered for one parse (the Content-Type is asked for about 18 times per
    # submission): the submission or the refusal must be exactly that of a parse without the cache.
    from email.header import Header

    headers = (b"X-MyHUG-Patient-Name: " + Header(name, "utf-8").encode().encode() + b"\r\nSubject: "
               + Header(subject, "utf-8").encode().encode() + b"\r\n")
    raw = HEAD.replace(b"MIME-Version", headers + b"MIME-Version") + attachment(b64_lines(data), kind=kind) + \
        b"\r\n" + attachment(b64_lines(data), kind=kind) + b"\r\n--XYZ--\r\n"
    cached = outcome(raw, whole=True)
    original = submission._HeaderCache
    submission._HeaderCache = _NoCache  # type: ignore[misc,assignment]
    try:
        assert outcome(raw, whole=True) == cached
    finally:
        submission._HeaderCache = original


def test_each_parse_has_its_own_header_cache() -> None:
    # A cache that outlived one parse would keep patient names in memory.
    first = submission._parse_mime(HEAD + attachment(b64_lines(b"x")) + b"\r\n--XYZ--\r\n")
    second = submission._parse_mime(HEAD + attachment(b64_lines(b"y")) + b"\r\n--XYZ--\r\n")
    assert isinstance(first.policy.header_factory, submission._HeaderCache)  # type: ignore[attr-defined]
    assert first.policy.header_factory is not second.policy.header_factory  # type: ignore[attr-defined]


def test_the_header_cache_tells_headers_apart_by_name_and_value() -> None:
    cache = submission._HeaderCache()
    as_type = cache("Content-Type", 'application/pdf; name="a.pdf"')
    as_subject = cache("Subject", 'application/pdf; name="a.pdf"')
    assert as_type is cache("Content-Type", 'application/pdf; name="a.pdf"')  # remembered within the parse
    assert as_subject is not as_type and as_type.params == {"name": "a.pdf"}  # type: ignore[attr-defined]
    assert cache("Content-Type", "text/plain") is not as_type
