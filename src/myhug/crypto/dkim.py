"""DKIM with dkimpy: signing (rsa-sha256, relaxed/simple, no `l=` tag) and verifying what the HIN side signed."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.dnsplug import get_txt

SIGNED_HEADERS = [
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type",
    b"Disposition-Notification-To", b"X-MyHUG-Document-Id", b"X-MyHUG-Event", b"Auto-Submitted",
]


def canonical_crlf(message: bytes) -> bytes:
    """CRLF line endings throughout: what goes on the wire, hence what must be signed.

    Two byte replacements (in C) rather than a regular expression: on a 140 kB
    message this ran as often as the DKIM signature itself and cost a tenth of it.
    """
    if message.count(b"\n") == message.count(b"\r\n"):
        return message  # already canonical: no copy (a large message is signed and sent without one)
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class DkimSigner:
    """Signs with the gateway's key: dkimpy canonicalises and hashes, OpenSSL (`cryptography`) does the RSA.

    dkimpy parses the PEM key and computes the RSA signature in pure Python
    on every call, which made signing about a sixth of the CPU of a HIN
    delivery. Here the key is parsed once; the header and body are still
    canonicalised and hashed by dkimpy (relaxed/simple, sha256), so any
    verifier sees exactly what dkimpy would have produced, but the time stamp.

    Body canonicalisation is "simple": every body the gateway signs is its own
    output (base64, OpenPGP armour, quoted-printable, short text lines) with
    no trailing whitespace for "relaxed" to forgive, and dkimpy's relaxed body
    pass (regular expressions over every line) was half the signing time of
    a 140 kB message. Headers stay "relaxed": relays do refold those.
    """

    CANONICALIZATION = b"relaxed/simple"

    def __init__(self, key_file: Path, domain: str, selector: str) -> None:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{key_file}: the DKIM key must be an RSA private key")
        self.key = key
        self.domain = domain.encode()
        self.selector = selector.encode()

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature header prepended, line endings canonical."""
        message = canonical_crlf(message)
        end = message.find(b"\r\n\r\n")
        head_end = len(message) if end < 0 else end + 4
        # A view: a 35 MB body is hashed without a copy.
        return self.signature(message[:head_end], [memoryview(message)[head_end:]]) + message

    def signature(self, head: bytes, body: Iterable[bytes | memoryview]) -> bytes:
        """The DKIM-Signature header field (CRLF-terminated) for a header block and its body, given in pieces.

        `head` is the message's header block and `body` its body, both with
        CRLF line ends. Streamed messages are signed this way without being
        held whole.
        """
        body_hash = SimpleBodyHash()
        for piece in body:
            body_hash.update(piece)
        headers, _ = dkim.rfc822_parse(head)  # dkimpy's parser splits a whole message; only the head needs it
        present = {name.lower() for name, _ in headers}
        include = [h.lower() for h in SIGNED_HEADERS if h.lower() in present]
        policy = dkim.CanonicalizationPolicy.from_c_value(self.CANONICALIZATION)
        tags = [
            (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", self.CANONICALIZATION), (b"d", self.domain),
            (b"i", b"@" + self.domain), (b"q", b"dns/txt"), (b"s", self.selector),
            (b"t", str(int(time.time())).encode()), (b"h", b":".join(include)), (b"bh", base64.b64encode(body_hash.digest())),
        ]
        # Folded between tags only, before hashing: what is hashed is byte for byte what is sent, b= aside.
        value = b" " + b";\r\n\t".join(name + b"=" + tag for name, tag in tags) + b";\r\n\tb="
        hasher = hashlib.sha256()
        dkim.hash_headers(hasher, policy, policy.canonicalize_headers(headers), include,
                          (b"DKIM-Signature", value), dict(tags))
        signature = base64.b64encode(self.key.sign(hasher.digest(), padding.PKCS1v15(),
                                                   utils.Prehashed(hashes.SHA256())))
        # b= may be folded anywhere: verifiers drop its value, whitespace included, before hashing.
        folded = b"\r\n\t ".join(signature[i:i + 72] for i in range(0, len(signature), 72))
        return b"DKIM-Signature:" + value + folded + b"\r\n"


class SimpleBodyHash:
    """SHA-256 of a body under "simple" canonicalisation (RFC 6376 3.4.3), fed in pieces as it is written.

    The rule: trailing empty lines are dropped and the body ends with one
    CRLF (an empty body is one CRLF). The CRLFs that end a piece are held
    back until text follows them, since they may be the trailing ones, and
    so is a CR that ends a piece, since the next may begin with its LF.
    """

    def __init__(self) -> None:
        self._hasher = hashlib.sha256()
        self._held = b""  # CRLF repeated, then possibly one CR: an odd length means a CR is last

    def update(self, piece: bytes | memoryview) -> None:
        """Hash the next piece of the body (a view is hashed without a copy)."""
        view = memoryview(piece)
        if not view:
            return
        if len(self._held) % 2:
            if view[0] == 0x0A:  # LF
                self._held += b"\n"
                view = view[1:]
            else:  # the held CR was text
                self._hasher.update(self._held)
                self._held = b""
        if not view:
            return
        end = len(view)
        if view[end - 1] == 0x0D:  # CR
            end -= 1
        while end >= 2 and view[end - 2] == 0x0D and view[end - 1] == 0x0A:
            end -= 2
        if end == 0:
            self._held += bytes(view)
            return
        self._hasher.update(self._held)
        self._hasher.update(view[:end])
        self._held = bytes(view[end:])

    def digest(self) -> bytes:
        """The hash of the whole body: its trailing empty lines dropped, one CRLF added."""
        hasher = self._hasher.copy()
        if len(self._held) % 2:
            hasher.update(self._held)  # the body ends in a CR: the line ends before it were text too
        hasher.update(b"\r\n")
        return hasher.digest()


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
