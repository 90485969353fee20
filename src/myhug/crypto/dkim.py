"""DKIM with dkimpy: signing (rsa-sha256, relaxed/relaxed, no `l=` tag) and verifying what the HIN side signed."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import dkim
from dkim.dnsplug import get_txt

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


TxtLookup = Callable[..., bytes | None]
_HAS_SIGNATURE = re.compile(rb"^DKIM-Signature:", re.IGNORECASE | re.MULTILINE)


def verify_dkim(message: bytes, dnsfunc: TxtLookup | None = None, timeout: float = 5) -> str:
    """The first DKIM signature's result, in RFC 8601 terms: `none`, `pass d=…`, `fail d=…`, `temperror`, `permerror`.

    `dnsfunc(name, timeout=…)` returns the TXT record (tests inject one);
    by default dkimpy asks DNS through dnspython. dkimpy folds a DNS timeout
    and a missing key into "not verified", so the lookup is watched here to
    tell them apart (RFC 6376 §6.1.2: TEMPFAIL vs PERMFAIL).
    """
    message = canonical_crlf(message)
    if not _HAS_SIGNATURE.search(message.split(b"\r\n\r\n", 1)[0]):
        return "none"
    resolve = dnsfunc or get_txt
    key_problem: list[str] = []

    def watched(name: bytes, timeout: float = timeout) -> bytes | None:
        try:
            record = resolve(name, timeout=timeout)
        except dkim.DnsTimeoutError:
            key_problem.append("temperror")
            raise
        if record is None:
            key_problem.append("permerror")  # no key published for this selector
        return record

    verifier = dkim.DKIM(message, timeout=timeout)
    try:
        ok = verifier.verify(dnsfunc=watched)
    except dkim.ValidationError:
        ok = False  # the signature or body hash does not match: a plain fail
    except dkim.DKIMException:
        return "permerror"  # malformed signature or key
    if not ok and key_problem:
        return key_problem[0]
    domain = verifier.domain.decode(errors="replace") if verifier.domain else "?"
    return f"{'pass' if ok else 'fail'} d={domain}"
