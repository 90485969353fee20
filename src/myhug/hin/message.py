"""The messages of the HIN route: PGP/MIME (RFC 3156) or S/MIME 4.0 (RFC 8551), with protected headers.

Outside the encryption there is nothing about the patient or the document:
a neutral Subject, the gateway as sender, the physician as recipient. The
encrypted inner MIME carries the real Subject (protected headers, "v1"), a
short text with the patient and document metadata, and the documents.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import format_datetime
from io import RawIOBase
from pathlib import Path
from typing import BinaryIO

from myhug.db.base import utcnow
from myhug.delivery.document import Document
from myhug.directory.profile import DOCUMENT_TYPES
from myhug.mail.mime import (
    ChunkReader,
    Header,
    SpooledMessage,
    StreamedLeaf,
    base64_chunks,
    header_block,
    leaf,
    multipart_chunks,
    text_leaf,
)

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
    author: str | None = None
    department: str | None = None
    # For practice software (`mail.xdm`): IHE_XDM.zip and the FHIR Bundle of DocumentReferences, if made.
    xdm: tuple[bytes, bytes] | None = None


XDM_PARTS = (("IHE_XDM.zip", "application/zip"), ("DocumentReference.fhir.json", "application/fhir+json"))


def inner_mime(content: HinContent, *, sender: str, recipient: str) -> Iterator[bytes]:
    """The plaintext that gets encrypted: protected headers + metadata text + attachments, in pieces.

    The attachments are base64-encoded as gpg reads them: a document is
    held once, as stored, never encoded whole.
    """
    lines = [
        f"Patient : {content.patient_name or '—'}",
        f"Date de naissance : {content.patient_birthdate or '—'}",
        f"N° patient HUG : {content.patient_id}",
        f"Document : {content.document_id}"
        + (f" ({DOCUMENT_TYPES.get(content.document_type, content.document_type)})" if content.document_type else ""),
    ]
    if content.department:
        lines.append(f"Service : {content.department}")
    if content.author:
        lines.append(f"Auteur : {content.author}")
    if content.note:
        lines += ["", content.note]
    text = text_leaf("\n".join(lines) + "\n", eight_bit=True)  # inside the encryption: 8-bit is safe
    attachments = [
        StreamedLeaf([("Content-Type", document.content_type if "/" in document.content_type
                       else "application/octet-stream"),
                      ("Content-Disposition", "attachment", {"filename": document.filename}),
                      ("Content-Transfer-Encoding", "base64")], functools.partial(base64_chunks, document.data))
        for document in content.documents
    ]
    if content.xdm is not None:  # inside the encryption, like everything that names the patient
        attachments += [
            StreamedLeaf([("Content-Type", content_type), ("Content-Disposition", "attachment", {"filename": name}),
                          ("Content-Transfer-Encoding", "base64")], functools.partial(base64_chunks, data))
            for (name, content_type), data in zip(XDM_PARTS, content.xdm, strict=True)
        ]
    headers: list[Header] = [("Subject", content.subject or NEUTRAL_SUBJECT), ("From", sender), ("To", recipient)]
    head, body = multipart_chunks("mixed", [text, *attachments], headers, {"protected_headers": "v1"})
    yield head
    yield from body


Encrypt = Callable[[BinaryIO | RawIOBase, Path], None]


def pgp_mime(
    content: HinContent,
    encrypt: Encrypt,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    receipts_address: str,
) -> SpooledMessage:
    """The outer `multipart/encrypted` message, spooled.

    `encrypt(source, output)` reads the inner MIME from `source` and writes
    the armored ciphertext to the file `output`; the message's body is then
    spooled from it, its line ends made CRLF.
    """
    # One temporary file, not a temporary directory: making and removing a directory per message (rmtree
    # walks it) was 2.7 % of a delivery worker's CPU in a profile. gpg overwrites the empty file.
    handle, name = tempfile.mkstemp(prefix="myhug-pgp-", suffix=".asc")
    os.close(handle)
    armored = Path(name)
    try:
        encrypt(ChunkReader(inner_mime(content, sender=sender, recipient=recipient)), armored)
        control = leaf([("Content-Type", "application/pgp-encrypted"),
                        ("Content-Description", "PGP/MIME version identification")], b"Version: 1\r\n")
        payload = StreamedLeaf([("Content-Type", "application/octet-stream", {"name": "encrypted.asc"}),
                                ("Content-Description", "OpenPGP encrypted message"),
                                ("Content-Disposition", "inline", {"filename": "encrypted.asc"})],
                               functools.partial(_crlf_file, armored))
        headers: list[Header] = [
            ("From", sender), ("To", recipient), ("Subject", NEUTRAL_SUBJECT), ("Date", format_datetime(utcnow())),
            ("Message-ID", message_id), ("MIME-Version", "1.0"), ("Disposition-Notification-To", receipts_address),
        ]
        head, body = multipart_chunks("encrypted", [control, payload], headers,
                                      {"protocol": "application/pgp-encrypted"})
        message = SpooledMessage(head)
        try:
            for chunk in body:
                message.write(chunk)
        except BaseException:
            message.close()
            raise
    finally:
        armored.unlink(missing_ok=True)
    return message


def _crlf_file(path: Path, size: int = 1 << 16) -> Iterator[bytes]:
    """gpg's armour with CRLF line ends, read in pieces (gpg writes LF, and never a CR in armour)."""
    with path.open("rb") as armour:
        while block := armour.read(size):
            if b"\r" in block:
                raise ValueError("gpg's ASCII armour holds a CR")
            yield block.replace(b"\n", b"\r\n")


def smime_message(content: HinContent, seal: Callable[[bytes], bytes], *, sender: str, recipient: str,
                  message_id: str, receipts_address: str, smime_type: str = "enveloped-data") -> SpooledMessage:
    """The outer S/MIME 4.0 message (RFC 8551): `application/pkcs7-mime`, nothing about the patient outside.

    `seal(inner)` signs the inner MIME (the same as the OpenPGP route's) with
    the gateway's certificate and envelopes it for the physician's, returning
    the CMS structure in DER; `smime_type` is `authEnveloped-data` for GCM.
    """
    sealed = seal(b"".join(inner_mime(content, sender=sender, recipient=recipient)))
    headers: list[Header] = [
        ("From", sender), ("To", recipient), ("Subject", NEUTRAL_SUBJECT), ("Date", format_datetime(utcnow())),
        ("Message-ID", message_id), ("MIME-Version", "1.0"), ("Disposition-Notification-To", receipts_address),
        ("Content-Type", "application/pkcs7-mime", {"smime_type": smime_type, "name": "smime.p7m"}),
        ("Content-Disposition", "attachment", {"filename": "smime.p7m"}),
        ("Content-Transfer-Encoding", "base64"),
    ]
    message = SpooledMessage(header_block(headers))
    try:
        for chunk in base64_chunks(sealed):
            message.write(chunk)
    except BaseException:
        message.close()
        raise
    return message
