"""Writing MIME without the e-mail package's generator: it folds the headers, C code encodes the bodies.

The standard library's generator writes a body line by line, scans it for
the boundary with a regular expression and re-encodes base64 in Python;
on a 100 kB document that was a fifth of the HIN route's CPU. Here the
e-mail package still writes every header (RFC 2047 words, RFC 2231
parameters, folding), and bodies are encoded by `binascii` and joined.
Every part is CRLF throughout: what is written is what is signed and sent.

A large document is never held encoded: a `StreamedLeaf` encodes its body
while it is written, and a message for the wire is a `SpooledMessage`, its
body in a temporary file (the HIN route's peak memory was ten times the
size of a 25 MB document before).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from email.message import MIMEPart
from email.policy import SMTP
from typing import Any, BinaryIO

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


_STRUCTURED = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})


def _plain(name: str, value: str, params: dict[str, str]) -> bytes | None:
    """`Name: value; param="v"` if every piece is printable ASCII and parameters need no escaping.

    A header longer than a line is folded after the ';' between parameters,
    where the e-mail package folds it too (a multipart's Content-Type with
    its boundary always was: a tenth of a receipt's cost went to parsing it
    back). One that no such fold brings within 78 characters is not plain.
    """
    pieces = [f"{name}: {value}", *(f'{key.replace("_", "-")}="{v}"' for key, v in params.items())]
    line = "; ".join(pieces)
    if not _PRINTABLE.fullmatch(line) or "=?" in line \
            or any(not v or '"' in v or "\\" in v for v in params.values()):  # "=?": read back as an encoded word
        return None
    # A value before parameters, or of a structured header, must be a MIME type or token: the e-mail
    # package cannot even read back a Content-Type such as ";0*" (an IndexError in its parser).
    if (params or name.lower() in _STRUCTURED) and not _TOKEN.fullmatch(value):
        return None
    if len(line) <= 78:
        return line.encode("ascii") + b"\r\n"
    lines = [pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + 2 + len(piece) <= 78:
            lines[-1] += "; " + piece
        else:
            lines[-1] += ";"
            lines.append(" " + piece)
    if any(len(folded) > 78 for folded in lines):
        return None
    return "\r\n".join(lines).encode("ascii") + b"\r\n"


def _encoded(name: str, value: str, params: dict[str, str]) -> bytes:
    part = MIMEPart(policy=SMTP)
    part.add_header(name, value, **params)
    return b"".join(SMTP.fold_binary(n, v) for n, v in part.raw_items())


def base64_body(data: bytes) -> bytes:
    """`data` in base64, 76 characters a line (RFC 2045 6.8), CRLF line ends."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def base64_chunks(data: bytes, lines_per_chunk: int = 1024) -> Iterator[bytes]:
    """`base64_body(data)` in pieces of whole lines, encoded from a view of `data`: no copy of it is made."""
    step = 57 * lines_per_chunk  # 57 octets make one 76-character line
    view = memoryview(data)
    for start in range(0, len(data), step):
        yield base64.encodebytes(view[start:start + step]).replace(b"\n", b"\r\n")


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


@dataclass(frozen=True)
class StreamedLeaf:
    """A part whose body is produced while it is written (base64, OpenPGP armour), never held whole.

    Its body must never contain '_', which every boundary does: base64 and
    ASCII armour cannot, and `multipart_chunks` checks each chunk anyway.
    """

    headers: Sequence[Header]
    body: Callable[[], Iterable[bytes]]


Part = bytes | StreamedLeaf


def multipart(subtype: str, parts: Sequence[Part], headers: Sequence[Header] = (),
              params: dict[str, str] | None = None) -> bytes:
    """A `multipart/<subtype>` entity of `parts` (each a `leaf`, a `multipart` or a `StreamedLeaf`), fresh boundary.

    `headers` come before the Content-Type (e.g. a message's From, To, Subject);
    `params` are the Content-Type's parameters besides the boundary.
    """
    head, body = multipart_chunks(subtype, parts, headers, params)
    return head + b"".join(body)


def multipart_chunks(subtype: str, parts: Sequence[Part], headers: Sequence[Header] = (),
                     params: dict[str, str] | None = None) -> tuple[bytes, Iterator[bytes]]:
    """`multipart`, as its header block and its body's chunks, produced as they are read."""
    boundary = _boundary([part for part in parts if isinstance(part, bytes)])
    content_type: Header = ("Content-Type", f"multipart/{subtype}", {**(params or {}), "boundary": boundary})
    return header_block([*headers, content_type]), _body_chunks(boundary.encode(), parts)


def _body_chunks(boundary: bytes, parts: Sequence[Part]) -> Iterator[bytes]:
    delimiter = b"--" + boundary
    for part in parts:
        # The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1), as the generator writes it.
        yield delimiter + b"\r\n"
        if isinstance(part, bytes):
            yield part
        else:
            yield header_block(part.headers)
            for chunk in part.body():
                if b"_" in chunk:
                    raise ValueError("a streamed MIME body holds '_', which could close its part early")
                yield chunk
        yield b"\r\n"
    yield delimiter + b"--\r\n"


def _boundary(parts: Sequence[bytes]) -> str:
    """A random boundary that occurs in none of the parts (RFC 2046 5.1.1), checked rather than assumed.

    A streamed part is not searched: its body cannot hold the '_' of every boundary.
    """
    while True:
        boundary = "=_" + secrets.token_hex(16)
        if not any(boundary.encode() in part for part in parts):
            return boundary


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte strings: what a subprocess's stdin copier needs."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


class SpooledMessage:
    """A message as it goes on the wire, CRLF throughout: its header block in memory, its body spooled.

    The body stays in memory up to `IN_MEMORY` octets and goes to an
    anonymous temporary file beyond, so a 50 MB message is never held whole.
    What is spooled is only ever ciphertext or the gateway's own neutral
    text (the HIN route): nothing about a patient reaches the disk in clear.
    """

    IN_MEMORY = 1 << 20
    CHUNK = 1 << 16

    def __init__(self, head: bytes) -> None:
        self.head = head
        # Owned for the message's life (closed by `close`), so no context manager.
        self._body: BinaryIO = tempfile.SpooledTemporaryFile(max_size=self.IN_MEMORY)  # type: ignore[assignment]  # noqa: SIM115
        self.body_size = 0

    def write(self, chunk: bytes) -> None:
        """Append to the body (while it is built, before it is read)."""
        if chunk:
            self._body.write(chunk)
            self.body_size += len(chunk)

    @property
    def size(self) -> int:
        """Octets on the wire, before dot-stuffing (RFC 1870 SIZE)."""
        return len(self.head) + self.body_size

    def prepend(self, header: bytes) -> None:
        """Put a header field before the others (a DKIM-Signature once the body is written)."""
        self.head = header + self.head

    def chunks(self) -> Iterator[bytes]:
        """The whole message in pieces that each end at a line end (so each begins a line), the head first."""
        yield self.head
        yield from self.body_chunks()

    def body_chunks(self) -> Iterator[bytes]:
        """The body, from its start, in pieces that each end at a line end."""
        self._body.seek(0)
        carry = b""
        while block := self._body.read(self.CHUNK):
            block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
                continue
            carry = block[cut:]
            yield block[:cut]
        if carry:
            yield carry + b"\r\n"  # the wire needs a last line end; the gateway's bodies always have one

    def as_bytes(self) -> bytes:
        """The whole message at once (tests, small messages)."""
        return b"".join(self.chunks())

    def close(self) -> None:
        self._body.close()
