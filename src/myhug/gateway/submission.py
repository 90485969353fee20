"""Parsing of a DPI submission: metadata headers and attached documents (SPEC §4).

Pure functions on bytes, no I/O: the SMTP edge calls `parse_submission` and
answers 554 5.6.0 with the message of any `InvalidSubmission` it raises.

For a clinical document a wrong patient name or a corrupt attachment is worse
than a refusal (the DPI can fix a refusal and resend), so everything the
gateway could not hand on faithfully is refused here: undecodable or
control-character headers, unknown charsets, unknown or broken transfer
encodings, and structures beyond the limits below.
"""

from __future__ import annotations

import binascii
import codecs
import email
import email.errors
import email.policy
import mimetypes
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from email.feedparser import BytesFeedParser
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message

from myhug.delivery.document import Document
from myhug.directory.identifiers import IDENTIFIER
from myhug.errors import PermanentFailure

PATIENT_ID = "X-MyHUG-Patient-Id"
DOCUMENT_ID = "X-MyHUG-Document-Id"
PATIENT_NAME = "X-MyHUG-Patient-Name"
PATIENT_BIRTHDATE = "X-MyHUG-Patient-Birthdate"
DOCUMENT_TYPE = "X-MyHUG-Document-Type"
AUTHOR = "X-MyHUG-Author"  # the physician who signed the document (SPEC §8)
DEPARTMENT = "X-MyHUG-Department"  # the HUG service that sent it, e.g. "Service de cardiologie"
MAX_SENDER_TEXT = 200  # characters of an author or a department

# Structure limits (README, "Security"): far above any real discharge letter, far below a parser bomb.
MAX_HEADER_FIELDS = 500  # header fields in the whole message, all parts together
MAX_DEPTH = 10  # multipart nesting
MAX_PARTS = 200  # MIME parts of any kind
MAX_ATTACHMENTS = 100  # documents in one submission
MAX_FILENAME = 120  # characters of a stored file name

TRANSFER_ENCODINGS = ("7bit", "8bit", "binary", "base64", "quoted-printable")

_DOCUMENT_TYPE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# C0 (tab aside, which is folding whitespace), DEL, C1 and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# Bidirectional overrides and invisible formatting: they make "gpj.exe" look like "exe.jpg".
_BIDI_AND_INVISIBLE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_UNSAFE_IN_FILENAME = re.compile(r'[<>:"|?*]')
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")  # no leading dot (hidden file, "..") nor trailing dot or space
_ENCODED_WORD_CHARSET = re.compile(r"=\?([^?*\s]+)(?:\*[^?\s]*)?\?[QqBb]\?")
_RFC2231_CHARSET = re.compile(r"\*(?:0\*)?\s*=\s*\"?([^'\";\s]*)'", re.ASCII)
_QP_BAD_ESCAPE = re.compile(rb"=(?![0-9A-Fa-f]{2}|\r?\n|$)")
_WHITESPACE = b" \t\r\n"  # deleted by bytes.translate (C speed) before a strict base64 decode
# Sixteen lines or more of base64 characters only, each from the start of a line: the body of a
# large attachment. The e-mail package keeps every line of a body as its own string and then joins
# them (about 90 MB for a moment on a 34 MB message, and a quarter of intake CPU); it is given one
# placeholder line per run instead, and the attachment is decoded from the message's own bytes.
# Such a line cannot be a header, a boundary or a blank line, so the structure parsed is the same.
_BASE64_RUN = re.compile(rb"^(?:[A-Za-z0-9+/=]+\r\n){16,}", re.MULTILINE)
# NUL is refused in a submission: a placeholder can never be taken for what the DPI sent.
_PLACEHOLDER = re.compile(r"\x00elided (\d+)(?:\r\n)?")
_DECODE_WINDOW = 1 << 20

# Defects that mean the MIME structure cannot be trusted to hold what the DPI meant.
_FATAL_DEFECTS = (
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.CloseBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
    email.errors.NoBoundaryInMultipartDefect,
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.InvalidMultipartContentTransferEncodingDefect,
)


class InvalidSubmission(PermanentFailure):
    """Missing or invalid metadata, or malformed MIME; the message names the header or defect."""


@dataclass(frozen=True)
class ParsedSubmission:
    """What the gateway keeps of a submission. Everything but `document_id` and `document_type` is sealed."""

    patient_id: str
    document_id: str
    patient_name: str | None
    patient_birthdate: str | None
    document_type: str | None
    subject: str | None
    note: str | None
    documents: list[Document] = field(default_factory=list)
    author: str | None = None
    department: str | None = None

    def sealed_metadata(self) -> dict[str, object]:
        """The JSON-able metadata stored in the sealed metadata blob."""
        return {
            "patient_id": self.patient_id,
            "patient_name": self.patient_name,
            "patient_birthdate": self.patient_birthdate,
            "subject": self.subject,
            "note": self.note,
            "author": self.author,
            "department": self.department,
            "filenames": [d.filename for d in self.documents],
            "original_filenames": [d.original_filename for d in self.documents],
        }


def _has_surrogates(text: str) -> bool:
    # The bytes parser carries undecoded 8-bit bytes as lone surrogates.
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _clean_text(value: str, where: str) -> str:
    """A decoded header value or file name: no undecodable bytes, no control characters, no line breaks."""
    # U+FFFD is what the decoder leaves of bytes that were not valid in their charset.
    if _has_surrogates(value) or "\ufffd" in value:
        raise InvalidSubmission(f"{where} is not valid text after decoding")
    value = value.replace("\t", " ")
    if _CONTROL.search(value):
        raise InvalidSubmission(f"{where} contains a control character or line break")
    return value


def _utf8_headers(part: Message) -> list[tuple[str, str]]:
    """The part's raw headers, 8-bit bytes read as UTF-8 (RFC 6532); a header that is not valid UTF-8 is refused.

    The bytes parser keeps 8-bit bytes as surrogates; left so, a patient name
    would reach the physician as mojibake, so such headers are set again as text.
    """
    items: list[tuple[str, str]] = list(part.raw_items())
    if not any(_has_surrogates(value) for _, value in items):
        return items
    fixed: list[tuple[str, str]] = []
    for name, value in items:
        try:
            text = value.encode("ascii", "surrogateescape").decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSubmission(f"header {name} is neither ASCII nor valid UTF-8") from None
        fixed.append((name, re.sub(r"\r?\n(?=[ \t])", "", text)))
    for name in {name for name, _ in fixed}:
        del part[name]
    for name, value in fixed:
        try:
            part[name] = value
        except ValueError:  # a header that may appear once, twice
            raise InvalidSubmission(f"header {name} appears more than once") from None
    return fixed


def _check_charsets(items: list[tuple[str, str]]) -> None:
    """Every charset named in a header is known: RFC 2047 encoded words and RFC 2231 parameters alike.

    Python's parser decodes an unknown charset as raw bytes without a word; the gateway refuses instead.
    """
    for name, value in items:
        charsets = _ENCODED_WORD_CHARSET.findall(value)
        if name.lower() in ("content-type", "content-disposition"):
            charsets += _RFC2231_CHARSET.findall(value)
        for charset in charsets:
            _known_charset(charset, f"header {name}")


def _known_charset(charset: str, where: str) -> None:
    if not charset:
        return
    try:
        codecs.lookup(charset)
    except LookupError:
        raise InvalidSubmission(f"{where}: unknown charset {charset[:40]!r}") from None


def _single_header(message: Message, name: str, required: bool) -> str | None:
    values = message.get_all(name) or []
    if len(values) > 1:
        raise InvalidSubmission(f"header {name} appears {len(values)} times")
    if not values:
        if required:
            raise InvalidSubmission(f"missing header {name}")
        return None
    value = _clean_text(str(values[0]), f"header {name}").strip()
    if required and not value:
        raise InvalidSubmission(f"empty header {name}")
    return value or None


def _identifier(message: Message, name: str) -> str:
    value = _single_header(message, name, required=True)
    assert value is not None
    if not IDENTIFIER.fullmatch(value):
        raise InvalidSubmission(f"invalid header {name}: letters, digits and ._:/- only, at most 128")
    return value


def _structure(message: Message) -> list[Message]:
    """Every part, depth first, after checking the structure limits and each part's headers."""
    parts: list[Message] = []
    headers = 0
    stack: list[tuple[Message, int]] = [(message, 1)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidSubmission(f"malformed MIME: nested deeper than {MAX_DEPTH} levels")
        parts.append(part)
        if len(parts) > MAX_PARTS:
            raise InvalidSubmission(f"malformed MIME: more than {MAX_PARTS} parts")
        headers += len(part)
        if headers > MAX_HEADER_FIELDS:
            raise InvalidSubmission(f"malformed MIME: more than {MAX_HEADER_FIELDS} header fields")
        defects = sorted({type(d).__name__ for d in part.defects if isinstance(d, _FATAL_DEFECTS)})
        if defects:
            raise InvalidSubmission(f"malformed MIME: {', '.join(defects)}")
        _check_charsets(_utf8_headers(part))
        if part.is_multipart():
            if not part.get_boundary():
                raise InvalidSubmission("malformed MIME: multipart without boundary")
            children = part.get_payload()
            assert isinstance(children, list)
            stack.extend((child, depth + 1) for child in reversed(children) if isinstance(child, Message))
    return parts


class _ParseWhole(Exception):  # noqa: N818  (a signal, not an error)
    """A placeholder landed outside a base64 body: the message is parsed again, whole."""


class _Elided:
    """A message with its base64 runs taken out (`skeleton`), and the runs, to be put back by offset."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.runs: list[tuple[int, int]] = []
        self.restored = 0
        pieces: list[bytes] = []
        last = 0
        for match in _BASE64_RUN.finditer(raw):
            pieces += [raw[last:match.start()], b"\x00elided %d\r\n" % len(self.runs)]
            self.runs.append(match.span())
            last = match.end()
        self.skeleton = b"".join([*pieces, raw[last:]]) if self.runs else raw

    def decode_base64(self, text: str, where: str) -> bytes:
        """The base64 body `text` (from the skeleton) decoded, its runs read from the original bytes."""
        pieces: list[bytes | memoryview] = []
        last = 0
        for match in _PLACEHOLDER.finditer(text):
            pieces.append(text[last:match.start()].encode("ascii"))
            start, end = self.runs[int(match.group(1))]
            pieces.append(memoryview(self.raw)[start:end])
            self.restored += 1
            last = match.end()
        pieces.append(text[last:].encode("ascii"))
        return _decode_base64(pieces, where)


def _decode_base64(pieces: list[bytes | memoryview], where: str) -> bytes:
    """A strict base64 decode of the pieces joined, whitespace aside, a window at a time.

    The verdict is that of one strict decode of the whole body (CPython's
    rules: padding only at the end, where a stray '=' after a complete quad
    passes): whole quads are decoded as windows come, but the quad before
    any padding is kept back with it, so the end is decoded as the whole
    would be. The body is never copied whole, encoded, with or without its
    line ends.
    """
    decoded: list[bytes] = []
    held = b""  # what is not decoded yet: the last complete quad and the rest, or everything from before padding
    try:
        for piece in pieces:
            for start in range(0, len(piece), _DECODE_WINDOW):
                text = bytes(piece[start:start + _DECODE_WINDOW]).translate(None, _WHITESPACE)
                if b"=" in held:  # padding has begun: only more '=' may follow
                    if text.strip(b"="):
                        raise binascii.Error("data after the padding")
                    held += text
                    continue
                held += text
                pad = held.find(b"=")
                keep = max((pad if pad >= 0 else len(held)) // 4 * 4 - 4, 0)
                decoded.append(binascii.a2b_base64(held[:keep], strict_mode=True))
                held = held[keep:]
        decoded.append(binascii.a2b_base64(held, strict_mode=True))
    except binascii.Error:
        raise InvalidSubmission(f"{where}: invalid base64") from None
    return b"".join(decoded)


def _body(part: Message, where: str, elided: _Elided | None = None) -> bytes:
    """The part's content, decoded strictly under its Content-Transfer-Encoding.

    With `elided`, the part comes from a skeleton: a base64 body has its
    runs put back; a placeholder anywhere else asks for the whole parse.
    """
    cte = str(part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    if cte not in TRANSFER_ENCODINGS:
        raise InvalidSubmission(f"{where}: unknown Content-Transfer-Encoding {cte[:40]!r}")
    if cte in ("base64", "quoted-printable"):
        text = part.get_payload()
        assert isinstance(text, str)
        if not text.isascii():
            raise InvalidSubmission(f"{where}: 8-bit data in a part declared {cte}")
        if elided is not None and cte == "base64":
            return elided.decode_base64(text, where)
        raw = text.encode("ascii")
    else:
        payload = part.get_payload(decode=True)  # the bytes as received: these encodings do not transform
        assert isinstance(payload, bytes)
        raw = payload
    if elided is not None and b"\x00" in raw:
        raise _ParseWhole
    if cte == "base64":
        return _decode_base64([raw], where)
    if cte == "quoted-printable":
        if _QP_BAD_ESCAPE.search(raw):
            raise InvalidSubmission(f"{where}: invalid quoted-printable")
        return binascii.a2b_qp(raw)
    if cte == "7bit" and not raw.isascii():
        raise InvalidSubmission(f"{where}: 8-bit data in a part declared 7bit")
    return raw


def safe_filename(name: str, fallback: str) -> str:
    """A base name safe to store, to put in a download header and to save: no path, no tricks, bounded.

    `fallback` is used when nothing usable is left.
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _BIDI_AND_INVISIBLE.sub("", _CONTROL.sub("", name))
    name = _EDGES.sub("", _UNSAFE_IN_FILENAME.sub("_", name))
    if not name:
        return fallback
    if len(name) > MAX_FILENAME:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 10:
            name = f"{_EDGES.sub('', stem[: MAX_FILENAME - len(extension) - 1])}.{extension}"
        else:
            name = _EDGES.sub("", name[:MAX_FILENAME])
    return name


def _fallback_name(document_id: str, position: int, content_type: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", document_id).strip("._") or "document"
    return f"{base}-{position}{mimetypes.guess_extension(content_type) or '.bin'}"


def _is_document(part: Message) -> bool:
    if part.is_multipart():
        return False
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return True
    return disposition != "inline" and part.get_content_maintype() not in ("text", "multipart")


_FEED_CHUNK = 1 << 16


class _HeaderCache(HeaderRegistry):
    """The default policy's header registry, remembering the header objects of one parse.

    The parser and the checks ask a part for its Content-Type about 18
    times per submission, and `email.policy.default` parses the header
    anew each time: two thirds of a 100 kB submission's parse. Header
    objects are immutable, so one object per (name, value) is the same
    answer. One cache per parse, dropped with the message: a cache that
    outlived it would keep patient names in memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: str) -> BaseHeader:
        header = self._made.get((name, value))
        if header is None:
            header = self._made[(name, value)] = super().__call__(name, value)
        return header


def _parse_mime(raw: bytes) -> Message:
    """The e-mail package's parser, fed in 64 kB chunks.

    `email.message_from_bytes` decodes the whole message into one string and
    reads it back through a StringIO: on a 34 MB message its peak was 260 MB.
    Feeding the same parser (`BytesFeedParser`, the same per-byte decoding)
    in chunks peaks under 100 MB, and is faster.
    """
    parser = BytesFeedParser(policy=email.policy.default.clone(header_factory=_HeaderCache()))
    view = memoryview(raw)
    for start in range(0, len(raw), _FEED_CHUNK):
        parser.feed(bytes(view[start:start + _FEED_CHUNK]))
    return parser.close()


def parse_submission(raw: bytes) -> ParsedSubmission:
    """Parse and validate a submission; raises `InvalidSubmission` naming what is wrong.

    The e-mail package parses a skeleton of the message, its base64 runs
    taken out, and the attachments are decoded from the message itself.
    The result is that of parsing the whole message, which is done instead
    when a run lies anywhere but in a base64 body that is read.
    """
    if b"\x00" in raw:
        raise InvalidSubmission("NUL byte in the message (RFC 5322 forbids it)")
    elided = _Elided(raw)
    if elided.runs:
        try:
            parsed = _parse(elided.skeleton, elided)
        except _ParseWhole:
            pass
        else:
            if elided.restored == len(elided.runs):
                return parsed
    return _parse(raw, None)


def _parse(raw: bytes, elided: _Elided | None) -> ParsedSubmission:
    try:
        message = _parse_mime(raw)
    except RecursionError:
        raise InvalidSubmission(f"malformed MIME: nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:  # noqa: BLE001  (the parser is lenient; anything raised here is a broken message)
        raise InvalidSubmission(f"malformed MIME: {type(exc).__name__}") from None
    assert isinstance(message, EmailMessage)
    parts = _structure(message)

    patient_id = _identifier(message, PATIENT_ID)
    document_id = _identifier(message, DOCUMENT_ID)
    patient_name = _single_header(message, PATIENT_NAME, required=False)
    birthdate = _single_header(message, PATIENT_BIRTHDATE, required=False)
    if birthdate is not None:
        try:
            birthdate = date.fromisoformat(birthdate).isoformat()
        except ValueError:
            raise InvalidSubmission(f"invalid header {PATIENT_BIRTHDATE}: expected an ISO date YYYY-MM-DD") from None
    document_type = _single_header(message, DOCUMENT_TYPE, required=False)
    if document_type is not None and not _DOCUMENT_TYPE.fullmatch(document_type):
        raise InvalidSubmission(f"invalid header {DOCUMENT_TYPE}: lower-case letters, digits and '-' only")
    subject = _single_header(message, "Subject", required=False)
    # Who sent it: sealed like the rest, refused with control characters (`_single_header`) or when too long.
    author = _single_header(message, AUTHOR, required=False)
    department = _single_header(message, DEPARTMENT, required=False)
    for name, value in ((AUTHOR, author), (DEPARTMENT, department)):
        if value is not None and len(value) > MAX_SENDER_TEXT:
            raise InvalidSubmission(f"header {name} is longer than {MAX_SENDER_TEXT} characters")

    documents: list[Document] = []
    note: str | None = None
    for part in parts:
        if _is_document(part):
            position = len(documents) + 1
            if position > MAX_ATTACHMENTS:
                raise InvalidSubmission(f"more than {MAX_ATTACHMENTS} attachments")
            where = f"attachment {position}"
            data = _body(part, where, elided)
            if not data:
                raise InvalidSubmission(f"malformed MIME: empty {where}")
            content_type = part.get_content_type()
            original = part.get_filename()
            if original is not None:
                original = _clean_text(original, f"file name of {where}")
            fallback = _fallback_name(document_id, position, content_type)
            filename = safe_filename(original, fallback) if original else fallback
            documents.append(Document(filename, content_type, data, original))
        elif part.get_content_type() == "text/plain" and note is None:
            data = _body(part, "text part", elided)
            charset = part.get_content_charset("us-ascii")
            _known_charset(charset, "text part")
            try:
                note = data.decode(charset).replace("\r\n", "\n").strip() or None
            except UnicodeDecodeError:
                raise InvalidSubmission(f"text part: not valid {charset[:40]}") from None
    if not documents:
        raise InvalidSubmission("no document attached")
    return ParsedSubmission(
        patient_id=patient_id,
        document_id=document_id,
        patient_name=patient_name,
        patient_birthdate=birthdate,
        document_type=document_type,
        subject=subject,
        note=note,
        documents=documents,
        author=author,
        department=department,
    )
