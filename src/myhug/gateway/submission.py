"""Parsing of a DPI submission: metadata headers and attached documents (SPEC §4).

Pure functions on bytes, no I/O: the SMTP edge calls `parse_submission` and
answers 554 5.6.0 with the message of any `InvalidSubmission` it raises.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage, Message

from myhug.errors import PermanentFailure

PATIENT_ID = "X-MyHUG-Patient-Id"
DOCUMENT_ID = "X-MyHUG-Document-Id"
PATIENT_NAME = "X-MyHUG-Patient-Name"
PATIENT_BIRTHDATE = "X-MyHUG-Patient-Birthdate"
DOCUMENT_TYPE = "X-MyHUG-Document-Type"

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_DOCUMENT_TYPE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

# Defects that mean the MIME structure cannot be trusted to hold what the DPI meant.
_FATAL_DEFECTS = (
    "StartBoundaryNotFoundDefect",
    "CloseBoundaryNotFoundDefect",
    "MultipartInvariantViolationDefect",
    "NoBoundaryInMultipartDefect",
    "InvalidBase64CharactersDefect",
    "InvalidBase64PaddingDefect",
    "InvalidBase64LengthDefect",
    "MissingHeaderBodySeparatorDefect",
    "InvalidMultipartContentTransferEncodingDefect",
)


class InvalidSubmission(PermanentFailure):
    """Missing or invalid metadata, or malformed MIME; the message names the header or defect."""


@dataclass(frozen=True)
class Document:
    filename: str
    content_type: str
    data: bytes


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

    def sealed_metadata(self) -> dict[str, object]:
        """The JSON-able metadata stored in the sealed metadata blob."""
        return {
            "patient_id": self.patient_id,
            "patient_name": self.patient_name,
            "patient_birthdate": self.patient_birthdate,
            "subject": self.subject,
            "note": self.note,
            "filenames": [d.filename for d in self.documents],
        }


def _single_header(message: Message, name: str, required: bool) -> str | None:
    values = message.get_all(name) or []
    if len(values) > 1:
        raise InvalidSubmission(f"header {name} appears {len(values)} times")
    if not values:
        if required:
            raise InvalidSubmission(f"missing header {name}")
        return None
    value = str(values[0]).strip()
    if required and not value:
        raise InvalidSubmission(f"empty header {name}")
    return value or None


def _identifier(message: Message, name: str) -> str:
    value = _single_header(message, name, required=True)
    assert value is not None
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidSubmission(f"invalid header {name}: letters, digits and ._:/- only, at most 128")
    return value


def _defects(part: Message) -> list[str]:
    return [type(d).__name__ for d in part.defects if type(d).__name__ in _FATAL_DEFECTS]


def _is_document(part: EmailMessage) -> bool:
    if part.is_multipart():
        return False
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return True
    return disposition != "inline" and part.get_content_maintype() not in ("text", "multipart")


def parse_submission(raw: bytes) -> ParsedSubmission:
    """Parse and validate a submission; raises `InvalidSubmission` naming what is wrong."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as exc:  # the parser is lenient; anything raised here is a broken message
        raise InvalidSubmission(f"malformed MIME: {type(exc).__name__}") from None
    assert isinstance(message, EmailMessage)

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

    documents: list[Document] = []
    note: str | None = None
    for part in message.walk():
        defects = _defects(part)
        if defects:
            raise InvalidSubmission(f"malformed MIME: {', '.join(sorted(set(defects)))}")
        assert isinstance(part, EmailMessage)
        if _is_document(part):
            payload = part.get_payload(decode=True)
            defects = _defects(part)  # decoding may reveal base64 defects
            if defects:
                raise InvalidSubmission(f"malformed MIME: {', '.join(sorted(set(defects)))}")
            if not isinstance(payload, bytes) or not payload:
                raise InvalidSubmission(f"malformed MIME: empty attachment {len(documents) + 1}")
            filename = part.get_filename() or f"document-{len(documents) + 1}"
            documents.append(Document(filename=filename, content_type=part.get_content_type(), data=payload))
        elif part.get_content_type() == "text/plain" and note is None:
            try:
                note = str(part.get_content()).strip() or None
            except (LookupError, ValueError):
                raise InvalidSubmission("malformed MIME: undecodable text part") from None
    if message.is_multipart() and not message.get_boundary():
        raise InvalidSubmission("malformed MIME: multipart without boundary")
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
    )
