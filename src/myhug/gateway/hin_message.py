"""The PGP/MIME message of the HIN route (RFC 3156), with protected headers.

Outside the encryption there is nothing about the patient or the document:
a neutral Subject, the gateway as sender, the physician as recipient. The
encrypted inner MIME carries the real Subject (protected headers, "v1"), a
short text with the patient and document metadata, and the documents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime

from myhug.crypto.dkim import canonical_crlf
from myhug.db.base import utcnow
from myhug.directory.profile import DOCUMENT_TYPES
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
    inner = MIMEPart()
    inner["Subject"] = content.subject or NEUTRAL_SUBJECT
    inner["From"] = sender
    inner["To"] = recipient
    lines = [
        f"Patient : {content.patient_name or '—'}",
        f"Date de naissance : {content.patient_birthdate or '—'}",
        f"N° patient HUG : {content.patient_id}",
        f"Document : {content.document_id}"
        + (f" ({DOCUMENT_TYPES.get(content.document_type, content.document_type)})" if content.document_type else ""),
    ]
    if content.note:
        lines += ["", content.note]
    inner.set_content("\n".join(lines) + "\n", charset="utf-8")
    for document in content.documents:
        maintype, _, subtype = document.content_type.partition("/")
        inner.add_attachment(document.data, maintype=maintype, subtype=subtype or "octet-stream",
                             filename=document.filename)
    inner.set_param("protected-headers", "v1")
    return canonical_crlf(bytes(inner))


def pgp_mime(
    content: HinContent,
    encrypt: Callable[[bytes], bytes],
    *,
    sender: str,
    recipient: str,
    message_id: str,
    receipts_address: str,
) -> EmailMessage:
    """The outer `multipart/encrypted` message; `encrypt` turns the inner MIME into armored ciphertext."""
    ciphertext = encrypt(inner_mime(content, sender=sender, recipient=recipient))
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = NEUTRAL_SUBJECT
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id
    message["MIME-Version"] = "1.0"
    message["Disposition-Notification-To"] = receipts_address
    message.set_type("multipart/encrypted")
    message.set_param("protocol", "application/pgp-encrypted")
    control = MIMEPart()
    control.set_content(b"Version: 1\r\n", maintype="application", subtype="pgp-encrypted", cte="7bit")
    control.replace_header("Content-Type", "application/pgp-encrypted")
    control["Content-Description"] = "PGP/MIME version identification"
    payload = MIMEPart()
    payload.set_content(ciphertext, maintype="application", subtype="octet-stream", cte="7bit",
                        disposition="inline", filename="encrypted.asc")
    payload["Content-Description"] = "OpenPGP encrypted message"
    message.attach(control)  # type: ignore[arg-type]  # typeshed: EmailMessage only
    message.attach(payload)  # type: ignore[arg-type]
    return message
