"""A minimal DPI-side SMTP client: builds a submission and sends it with STARTTLS + AUTH.

Used by `myhug demo`, the benchmark and the tests; a real DPI uses its own mailer.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes
    content_type: str = "application/pdf"


def build_submission(
    *,
    sender: str,
    recipients: list[str],
    patient_id: str,
    document_id: str,
    attachments: list[Attachment],
    patient_name: str | None = None,
    patient_birthdate: str | None = None,
    document_type: str | None = None,
    subject: str | None = None,
    note: str | None = None,
    author: str | None = None,
    department: str | None = None,
) -> EmailMessage:
    """A submission per SPEC §4: metadata in X-MyHUG-* headers, documents as attachments."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "dpi.localhost")
    message["X-MyHUG-Patient-Id"] = patient_id
    message["X-MyHUG-Document-Id"] = document_id
    if patient_name:
        message["X-MyHUG-Patient-Name"] = patient_name
    if patient_birthdate:
        message["X-MyHUG-Patient-Birthdate"] = patient_birthdate
    if document_type:
        message["X-MyHUG-Document-Type"] = document_type
    if author:
        message["X-MyHUG-Author"] = author
    if department:
        message["X-MyHUG-Department"] = department
    if subject:
        message["Subject"] = subject
    message.set_content(note or "Document transmis par le DPI.")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename)
    return message


@dataclass(frozen=True)
class SubmissionReply:
    code: int
    text: str

    @property
    def queue_id(self) -> str | None:
        prefix = "queued as "
        return self.text.split(prefix, 1)[1].strip() if prefix in self.text else None


def client_tls_context(cafile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def submit(
    message: EmailMessage,
    *,
    host: str,
    port: int,
    username: str,
    password: str,
    cafile: str | None,
    sender: str | None = None,
    recipients: list[str] | None = None,
    timeout: float = 60,
) -> SubmissionReply:
    """Send one submission; returns the server's final reply (never raises on a 4xx/5xx reply)."""
    client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=True, tls_context=client_tls_context(cafile), timeout=timeout)
    await client.connect()
    try:
        await client.login(username, password)
        try:
            _, reply = await client.send_message(message, sender=sender, recipients=recipients)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return SubmissionReply(first.code, first.message)
        except aiosmtplib.SMTPResponseException as exc:
            return SubmissionReply(exc.code, exc.message)
        return SubmissionReply(250, reply)
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()


def sample_pdf(title: str) -> bytes:
    """A small valid one-page PDF showing `title` (ASCII), for demos and tests."""
    safe = title.encode("ascii", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    stream = b"BT /F1 18 Tf 72 720 Td (" + safe + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += str(number).encode() + b" 0 obj\n" + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 " + str(len(objects) + 1).encode() + b"\n0000000000 65535 f \n"
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += b"trailer\n<< /Size " + str(len(objects) + 1).encode() + b" /Root 1 0 R >>\nstartxref\n" + str(xref).encode() + b"\n%%EOF\n"
    return bytes(out)
