"""The SMTP session of both listeners (aiosmtpd's `SMTP`, extended): SPEC §4 reply codes, connection caps,
the submission peers, the AUTH and DATA deadlines, and the DATA reader with its bare-CR/LF and line guards.

`gateway.server` gives it the submission handler; `supervisor` gives it the DSN/MDN handler.
"""


from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP

from myhug.config.settings import peer_in_networks

log = logging.getLogger(__name__)

# aiosmtpd's own replies without the enhanced status codes SPEC §4 asks for.
_REPLY_REWRITES = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "552 Error: Too much mail data": "552 5.3.4 Message too big for this gateway",
    "552 Error: message size exceeds fixed maximum message size": "552 5.3.4 Message too big for this gateway",
    "530 5.7.0 Authentication required": "530 5.7.0 Authentication required",
}


TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections from your address or in total; try again later\r\n"
NOT_AUTHENTICATED_IN_TIME = b"421 4.4.2 No successful authentication within the time limit; closing connection\r\n"
IDLE_TOO_LONG = b"421 4.4.2 Idle for too long; closing connection\r\n"
NOT_A_SUBMISSION_PEER = b"554 5.7.1 This address may not submit documents here\r\n"
DATA_TOO_SLOW = b"421 4.4.2 Message data not received within the time limit; closing connection\r\n"
BARE_LF = "554 5.6.0 Bare LF line ends in the message: every line must end with CR LF (RFC 5321 2.3.8)"
BARE_CR = "554 5.6.0 Bare CR in the message: a CR may only end a line, followed by LF (RFC 5321 2.3.8)"
LINE_TOO_LONG = "500 5.5.2 Line too long: at most 998 characters per line (RFC 5321 4.5.3.1.6)"


def has_bare_lf(data: bytes, previous: bytes = b"") -> bool:
    """True if some LF is not preceded by CR; `previous` is the byte before `data` (a chunk boundary).

    Two counts in C instead of a look-behind regular expression: the search
    ran on every chunk and again on the whole message, a sixth of intake CPU.
    """
    paired = data.count(b"\r\n") + (data[:1] == b"\n" and previous == b"\r")
    return data.count(b"\n") != paired


def has_bare_cr(data: bytes) -> bool:
    """True if some CR is not followed by LF (RFC 5321 2.3.8 forbids it as it forbids a bare LF).

    `<CR>.<CR>` and its kin end nothing here, but what follows them would be
    stored inside the document: refused whole, like a bare LF.
    """
    return data.count(b"\r") != data.count(b"\r\n")


def longest_line(data: bytes, window: int = 1 << 20) -> int:
    """The length of the longest CRLF-separated line of `data`, line end excluded.

    Split a window at a time: splitting a 34 MB message at once made 450,000
    line objects, 52 MB for a moment, for one number.
    """
    longest, carried = 0, 0  # carried: the length so far of a line that runs on past a window's end
    start = 0
    while start < len(data):
        end = start + window
        while data[end - 1:end] == b"\r":
            end += 1  # never cut a CRLF in two
        lines = data[start:end].split(b"\r\n")
        if len(lines) == 1:
            carried += len(lines[0])
        else:
            longest = max(longest, carried + len(lines[0]), *map(len, lines[1:-1]))
            carried = len(lines[-1])
        start = end
    return max(longest, carried)


class ConnectionLimiter:
    """Counts open SMTP connections, per peer address and in total (one per listening server)."""

    def __init__(self, total: int, per_peer: int, processes: int = 1) -> None:
        # Several processes accepting on one socket each keep their share, so the caps hold for the gateway.
        self.total = max(1, total // processes)
        self.per_peer = max(1, per_peer // processes)
        self.open: Counter[str] = Counter()

    def admit(self, peer: str) -> bool:
        """Count a new connection from `peer`; False (and nothing counted) if a cap is reached."""
        if sum(self.open.values()) >= self.total or self.open[peer] >= self.per_peer:
            return False
        self.open[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self.open[peer] -= 1
        if self.open[peer] <= 0:
            del self.open[peer]


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP with SPEC §4 reply codes, connection caps, a DATA deadline and bare-LF detection.

    Both listening ports use it: the DPI's submissions and the HIN side's DSN/MDN.
    """

    DATA_WINDOW = 1 << 20  # octets of DATA searched at once for its end

    def __init__(self, *args: Any, limiter: ConnectionLimiter, data_timeout: float,
                 pre_auth_timeout: float | None = None, allowed_peers: list[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limiter = limiter
        self.data_timeout = data_timeout
        # Submission port only: AUTH must succeed within this many seconds (the receipts port has no AUTH).
        self.pre_auth_timeout = pre_auth_timeout
        self.allowed_peers = allowed_peers or []  # empty: any peer (smtp.submission_peers)
        self._admitted: str | None = None  # the peer counted in the limiter, until the connection ends
        self._refused = False
        self._data_deadline: asyncio.TimerHandle | None = None
        self._auth_deadline: asyncio.TimerHandle | None = None
        self._last_byte = b""
        self.bare_lf = False  # a LF without CR was seen in the current DATA

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # the TCP connection itself, not the switch to TLS
            peername = transport.get_extra_info("peername")
            peer = str(peername[0]) if peername else "unknown"
            if self.allowed_peers and not peer_in_networks(peer if peername else None, self.allowed_peers):
                # Refused before the caps: a stranger never holds a slot the DPI needs.
                log.warning("SMTP connection from %s refused: not in smtp.submission_peers", peer)
                self._refused = True
                transport.write(NOT_A_SUBMISSION_PEER)  # type: ignore[attr-defined]
                transport.close()
                return
            if not self.limiter.admit(peer):
                log.warning("SMTP connection from %s refused: connection cap reached", peer)
                self._refused = True
                transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[attr-defined]
                transport.close()
                return
            self._admitted = peer
            if self.pre_auth_timeout is not None:
                self._auth_deadline = asyncio.get_running_loop().call_later(self.pre_auth_timeout,
                                                                            self._not_authenticated_in_time)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._admitted is not None:
            self.limiter.release(self._admitted)
            self._admitted = None
        self._cancel_data_deadline()
        self._cancel_auth_deadline()
        super().connection_lost(error)

    async def smtp_AUTH(self, arg: str) -> None:
        await super().smtp_AUTH(arg)
        if self.session is not None and self.session.authenticated:
            self._cancel_auth_deadline()

    def _cancel_auth_deadline(self) -> None:
        if self._auth_deadline is not None:
            self._auth_deadline.cancel()
            self._auth_deadline = None

    def _not_authenticated_in_time(self) -> None:
        self._auth_deadline = None
        log.warning("SMTP connection from %s not authenticated within %ss; closing", self._admitted,
                    self.pre_auth_timeout)
        self._close_with(NOT_AUTHENTICATED_IN_TIME)

    def _timeout_cb(self) -> None:
        """aiosmtpd's idle timeout closes the connection without a word; RFC 5321 4.5.3.2 asks for a 421."""
        log.info("SMTP connection from %s idle for %ss; closing", self._admitted, self._timeout_duration)
        self._close_with(IDLE_TOO_LONG)

    def _close_with(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)  # type: ignore[attr-defined]
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._data_deadline is not None and not self.bare_lf:
            # A LF not preceded by CR, also across the boundary between two reads.
            self.bare_lf = has_bare_lf(data, self._last_byte)
            self._last_byte = data[-1:]
        super().data_received(data)

    async def smtp_DATA(self, arg: str) -> None:
        self.bare_lf, self._last_byte = False, b"\r"
        self._data_deadline = self.loop.call_later(self.data_timeout, self._data_too_slow)
        try:
            await self._data(arg)
        finally:
            self._cancel_data_deadline()

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA, searching the stream for the end of data a window at a time instead of line by line.

        aiosmtpd reads DATA one line at a time (a `readuntil` per line, each
        line its own object): on a 100 kB document that was a quarter of
        intake CPU, and on a large one the lines outweighed the message.
        Here the stream is searched for `.<CRLF>` (C speed, `_read_until_end_of_data`), and a match
        counts only at the start of a line, so `<LF>.<LF>` and other smuggling
        shapes never end the data. Then, as aiosmtpd does: a line over
        `line_length_limit` answers 500 (rewritten to the bare-LF reply when
        the data had one), over `data_size_limit` 552, both only once the
        end of data is read; dot-stuffing is undone (RFC 5321 4.5.2).
        """
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, too_much = await self._read_until_end_of_data()
        if too_much:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        if longest_line(content) + 2 > self.line_length_limit:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        if content.startswith(b"."):
            content = content[1:]
        content = content.replace(b"\r\n.", b"\r\n")  # RFC 5321 4.5.2: the first dot of a line goes
        self.envelope.content = content
        self.envelope.original_content = content
        del content  # the handler lets go of the message once parsed (a large one then weighs once, not twice)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_until_end_of_data(self) -> tuple[bytes, bool]:
        """The data up to (not including) the `.<CRLF>` line, and whether it went over `data_size_limit`.

        The reader's buffer limit (aiosmtpd sets it to the line length) is
        raised to `DATA_WINDOW` for the search and put back afterwards: the
        stream is searched a window at a time and what holds no end of data
        is set aside, so a large message is held about twice (its pieces,
        then joined), not three times (asyncio's buffer, its slice and the
        bytes of one search over the whole). Past the size limit the data is
        read and dropped up to the end of data, so the session stays in step
        and answers 552.
        """
        reader = self._reader
        size_limit = self.data_size_limit or 1 << 40
        saved_limit = reader._limit  # type: ignore[attr-defined]
        reader._limit = self.DATA_WINDOW  # type: ignore[attr-defined]
        pieces: list[bytes] = []
        size, too_much = 0, False
        tail = b"\r\n"  # the data starts at the start of a line
        try:
            while True:
                try:
                    piece = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as exc:  # no `.<CRLF>` in this window: set it aside
                    piece = await reader.read(exc.consumed)
                # The dot ends the data only if it opens a line: right after a CRLF, maybe from the piece before.
                ends = (tail + piece).endswith(b"\r\n.\r\n")
                size += len(piece) - (3 if ends else 0)
                if size > size_limit:
                    too_much, pieces = True, []
                if ends:
                    if not too_much:
                        pieces.append(piece[:-3])
                    return b"".join(pieces), too_much
                if not too_much:
                    pieces.append(piece)
                tail = (tail + piece)[-2:]
        finally:
            reader._limit = saved_limit  # type: ignore[attr-defined]

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command == "DATA":
            # All data is in: from here on the message is being stored, which no deadline may cut short.
            self._cancel_data_deadline()
        return await super()._call_handler_hook(command, *args)

    def _cancel_data_deadline(self) -> None:
        if self._data_deadline is not None:
            self._data_deadline.cancel()
            self._data_deadline = None

    def _data_too_slow(self) -> None:
        self._data_deadline = None
        log.warning("SMTP DATA from %s exceeded %ss; closing", self._admitted, self.data_timeout)
        self._close_with(DATA_TOO_SLOW)

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            if status.startswith("500 Line too long"):
                # aiosmtpd reads lines up to CR LF: bare LF ends make the whole message one long line.
                status = BARE_LF if self.bare_lf else LINE_TOO_LONG
            status = _REPLY_REWRITES.get(status, status)
        await super().push(status)
