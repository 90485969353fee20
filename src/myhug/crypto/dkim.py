"""DKIM with dkimpy: signing (rsa-sha256, relaxed/simple, no `l=` tag) and verifying what the HIN side signed."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
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
        # dkimpy's parser splits the whole message into lines; only the header block needs it.
        end = message.find(b"\r\n\r\n")
        headers, _ = dkim.rfc822_parse(message if end < 0 else message[:end + 4])
        present = {name.lower() for name, _ in headers}
        include = [h.lower() for h in SIGNED_HEADERS if h.lower() in present]
        policy = dkim.CanonicalizationPolicy.from_c_value(self.CANONICALIZATION)
        body_hash = base64.b64encode(_simple_body_hash(message, len(message) if end < 0 else end + 4))
        tags = [
            (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", self.CANONICALIZATION), (b"d", self.domain),
            (b"i", b"@" + self.domain), (b"q", b"dns/txt"), (b"s", self.selector),
            (b"t", str(int(time.time())).encode()), (b"h", b":".join(include)), (b"bh", body_hash),
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
        return b"DKIM-Signature:" + value + folded + b"\r\n" + message

def _simple_body_hash(message: bytes, start: int) -> bytes:
    """SHA-256 of the body from `start` under "simple" canonicalisation (RFC 6376 3.4.3), without copying it.

    The rule: trailing empty lines are dropped and the body ends with one
    CRLF (an empty body is one CRLF). The body is hashed through a memoryview;
    slicing a 35 MB body for dkimpy's canonicaliser copied it twice.
    """
    stop = len(message)
    while stop - 2 >= start and message[stop - 2:stop] == b"\r\n":
        stop -= 2
    hasher = hashlib.sha256(memoryview(message)[start:stop])
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
