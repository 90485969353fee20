"""The PGP/MIME message of the HIN route (RFC 3156), with protected headers.

Outside the encryption there is nothing about the patient or the document:
a neutral Subject, the gateway as sender, the physician as recipient. The
encrypted inner MIME carries the real Subject (protected headers, "v1"), a
short text with the patient and document metadata, and the documents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime

from myhug.crypto.dkim import canonical_crlf
from myhug.db.base import utcnow
from myhug.directory.profile import DOCUMENT_TYPES
from myhug.gateway.mime import Header, base64_body, leaf, multipart, text_leaf
from myhug.gateway.submission import Document

NEUTRAL_SUBJECT = "Document médical confidentiel"


@dataclass(frozen=True)
class HinContent:
    document_id: str
    document_type: str | None
    patient_id: str
    patient_name: str | None
    patient_birthdate: str | None
    subject: str | None
    note: str | None
    documents: list[Document]


def inner_mime(content: HinContent, *, sender: str, recipient: str) -> bytes:
    """The plaintext that gets encrypted: protected headers + metadata text + attachments."""
    lines = [
        f"Patient : {content.patient_name or '—'}",
        f"Date de naissance : {content.patient_birthdate or '—'}",
        f"N° patient HUG : {content.patient_id}",
        f"Document : {content.document_id}"
        + (f" ({DOCUMENT_TYPES.get(content.document_type, content.document_type)})" if content.document_type else ""),
    ]
    if content.note:
        lines += ["", content.note]
    text = text_leaf("\n".join(lines) + "\n", eight_bit=True)  # inside the encryption: 8-bit is safe
    attachments = [
        leaf([("Content-Type", document.content_type if "/" in document.content_type else "application/octet-stream"),
              ("Content-Disposition", "attachment", {"filename": document.filename}),
              ("Content-Transfer-Encoding", "base64")], base64_body(document.data))
        for document in content.documents
    ]
    headers: list[Header] = [("Subject", content.subject or NEUTRAL_SUBJECT), ("From", sender), ("To", recipient)]
    return multipart("mixed", [text, *attachments], headers, {"protected_headers": "v1"})


def pgp_mime(
    content: HinContent,
    encrypt: Callable[[bytes], bytes],
    *,
    sender: str,
    recipient: str,
    message_id: str,
    receipts_address: str,
) -> bytes:
    """The outer `multipart/encrypted` message; `encrypt` turns the inner MIME into armored ciphertext."""
    ciphertext = canonical_crlf(encrypt(inner_mime(content, sender=sender, recipient=recipient)))
    control = leaf([("Content-Type", "application/pgp-encrypted"),
                    ("Content-Description", "PGP/MIME version identification")], b"Version: 1\r\n")
    payload = leaf([("Content-Type", "application/octet-stream", {"name": "encrypted.asc"}),
                    ("Content-Description", "OpenPGP encrypted message"),
                    ("Content-Disposition", "inline", {"filename": "encrypted.asc"})], ciphertext)
    headers: list[Header] = [
        ("From", sender), ("To", recipient), ("Subject", NEUTRAL_SUBJECT), ("Date", format_datetime(utcnow())),
        ("Message-ID", message_id), ("MIME-Version", "1.0"), ("Disposition-Notification-To", receipts_address),
    ]
    return multipart("encrypted", [control, payload], headers, {"protocol": "application/pgp-encrypted"})
