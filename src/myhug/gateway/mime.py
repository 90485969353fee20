"""Writing MIME without the e-mail package's generator: it folds the headers, C code encodes the bodies.

The standard library's generator writes a body line by line, scans it for
the boundary with a regular expression and re-encodes base64 in Python;
on a 100 kB document that was a fifth of the HIN route's CPU. Here the
e-mail package still writes every header (RFC 2047 words, RFC 2231
parameters, folding), and bodies are encoded by `binascii` and joined.
Every part is CRLF throughout: what is written is what is signed and sent.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from email.message import MIMEPart
from email.policy import SMTP

_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(/[A-Za-z0-9!#$%&'*+.^_`|~-]+)?")  # RFC 2045 token[/token]
Header = tuple[str, str] | tuple[str, str, dict[str, str]]


def header_block(headers: Sequence[Header]) -> bytes:
    """The headers, folded and encoded, and the blank line that ends them.

    A header is (name, value) or (name, value, parameters); parameter names
    take '_' for '-' as in `Message.add_header`. A header that fits on one
    line in printable ASCII is written as is; any other goes through the
    e-mail package (RFC 2047, RFC 2231, folding), whose header parsing was
    most of the cost of a message's headers.
    """
    out = []
    for header in headers:
        params = header[2] if len(header) == 3 else {}
        out.append(_plain(header[0], header[1], params) or _encoded(header[0], header[1], params))
    return b"".join(out) + b"\r\n"


def _plain(name: str, value: str, params: dict[str, str]) -> bytes | None:
    """`Name: value; param="v"` if every piece is printable ASCII, parameters need no escaping, and it fits."""
    line = f"{name}: {value}" + "".join(f'; {key.replace("_", "-")}="{v}"' for key, v in params.items())
    if len(line) > 78 or not _PRINTABLE.fullmatch(line) or "=?" in line \
            or any(not v or '"' in v or "\\" in v for v in params.values()):  # "=?": read back as an encoded word
        return None
    if params and not _TOKEN.fullmatch(value):  # a value before parameters must be a MIME type or token
        return None
    return line.encode("ascii") + b"\r\n"


def _encoded(name: str, value: str, params: dict[str, str]) -> bytes:
    part = MIMEPart(policy=SMTP)
    part.add_header(name, value, **params)
    return b"".join(SMTP.fold_binary(n, v) for n, v in part.raw_items())


def base64_body(data: bytes) -> bytes:
    """`data` in base64, 76 characters a line (RFC 2045 6.8), CRLF line ends."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def quoted_printable_text(text: str) -> bytes:
    """UTF-8 text in quoted-printable (lines of at most 76 characters), CRLF line ends."""
    data = binascii.b2a_qp(text.replace("\r\n", "\n").encode(), istext=True)
    return data.replace(b"\n", b"\r\n") + (b"" if data.endswith(b"\n") else b"\r\n")


def text_leaf(text: str, *, eight_bit: bool = False) -> bytes:
    """A `text/plain; charset="utf-8"` part: 8bit when allowed and every line fits (RFC 5322: 998 octets),
    quoted-printable otherwise.

    8bit suits the HIN message's inner MIME, which travels encrypted (a
    physician reading `gpg --decrypt` output sees the text as written);
    what goes over SMTP in the open stays 7-bit.
    """
    data = text.replace("\r\n", "\n").encode()
    if eight_bit and max(map(len, data.split(b"\n"))) <= 998 and b"\r" not in data and b"\0" not in data:
        body = data.replace(b"\n", b"\r\n") + (b"" if data.endswith(b"\n") else b"\r\n")
        return leaf([("Content-Type", "text/plain", {"charset": "utf-8"}), ("Content-Transfer-Encoding", "8bit")], body)
    return leaf([("Content-Type", "text/plain", {"charset": "utf-8"}),
                 ("Content-Transfer-Encoding", "quoted-printable")], quoted_printable_text(text))


def leaf(headers: Sequence[Header], body: bytes) -> bytes:
    """A single part: its header block, then its body as already encoded."""
    return header_block(headers) + body


def multipart(subtype: str, parts: Sequence[bytes], headers: Sequence[Header] = (),
              params: dict[str, str] | None = None) -> bytes:
    """A `multipart/<subtype>` entity of `parts` (each a `leaf` or a `multipart`), with a fresh boundary.

    `headers` come before the Content-Type (e.g. a message's From, To, Subject);
    `params` are the Content-Type's parameters besides the boundary.
    """
    boundary = _boundary(parts)
    content_type: Header = ("Content-Type", f"multipart/{subtype}", {**(params or {}), "boundary": boundary})
    out = [header_block([*headers, content_type])]
    delimiter = b"--" + boundary.encode()
    for part in parts:
        # The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1), as the generator writes it.
        out += [delimiter, b"\r\n", part, b"\r\n"]
    out += [delimiter, b"--\r\n"]
    return b"".join(out)


def _boundary(parts: Sequence[bytes]) -> str:
    """A random boundary that occurs in none of the parts (RFC 2046 5.1.1), checked rather than assumed."""
    while True:
        boundary = "=_" + secrets.token_hex(16)
        if not any(boundary.encode() in part for part in parts):
            return boundary
