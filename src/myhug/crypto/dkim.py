"""DKIM signing with dkimpy: rsa-sha256, relaxed/relaxed, no `l=` tag."""

from __future__ import annotations

import re
from pathlib import Path

import dkim

SIGNED_HEADERS = [
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type",
    b"Disposition-Notification-To", b"X-MyHUG-Document-Id", b"X-MyHUG-Event", b"Auto-Submitted",
]


def canonical_crlf(message: bytes) -> bytes:
    """CRLF line endings throughout: what goes on the wire, hence what must be signed."""
    return re.sub(rb"\r?\n", b"\r\n", message)


class DkimSigner:
    def __init__(self, key_file: Path, domain: str, selector: str) -> None:
        self.private_key = key_file.read_bytes()
        self.domain = domain.encode()
        self.selector = selector.encode()

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature header prepended, line endings canonical."""
        message = canonical_crlf(message)
        present = {line.split(b":", 1)[0].strip().lower() for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if b":" in line}
        headers = [h for h in SIGNED_HEADERS if h.lower() in present]
        signature = dkim.sign(
            message, self.selector, self.domain, self.private_key,
            include_headers=headers, canonicalize=(b"relaxed", b"relaxed"),
        )
        return canonical_crlf(signature) + message
