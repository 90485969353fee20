"""The SMTP submission edge (aiosmtpd): STARTTLS, AUTH, parse, check, store, then answer.

It never talks to the outside world before replying. Database work runs in
worker threads so that one slow commit does not stall other sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from myhug.audit.trail import savepoint as trail_savepoint
from myhug.blobs.store import Sealer
from myhug.config.settings import Settings, peer_in_networks
from myhug.db.group_commit import CommitTimeout, GroupCommit
from myhug.db.session import Database
from myhug.directory.identifiers import InvalidIdentifier, normalize_address
from myhug.directory.service import authenticate_dpi_client
from myhug.gateway.intake import (
    Refused,
    SealedDocument,
    accept_submission,
    check_recipient,
    record_refusal,
    seal_documents,
    vet_recipients,
)
from myhug.gateway.submission import InvalidSubmission, parse_submission
from myhug.instruments import SUBMISSIONS

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary failure, message not accepted; try again later"
MAX_RECIPIENTS = 100

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


class DpiAuthenticator:
    """Checks SMTP AUTH credentials against the DPI clients.

    aiosmtpd calls authenticators synchronously on the event loop, so a
    successful argon2 verification is remembered (keyed by a hash of the
    credentials) for a few minutes: a DPI that reconnects all day costs one
    slow hash, not one per connection.
    """

    CACHE_SECONDS = 300

    def __init__(self, db: Database) -> None:
        self.db = db
        self._verified: dict[bytes, tuple[int, float]] = {}

    def __call__(self, server: SMTP, session: SmtpSession, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        key = hashlib.sha256(auth_data.login + b"\0" + auth_data.password).digest()
        cached = self._verified.get(key)
        if cached and cached[1] > time.monotonic():
            return AuthResult(success=True, auth_data=cached[0])
        try:
            # Reading only: on SQLite a write transaction would wait for the write lock here, on the event loop.
            with self.db.reading() as db_session:
                client = authenticate_dpi_client(db_session, login, password)
                client_id = client.id if client else None
        except SQLAlchemyError:
            log.exception("AUTH: database unavailable")
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")
        if client_id is None:
            log.warning("AUTH failed for %r from %s", login, session.peer)
            return AuthResult(success=False, handled=False)
        self._verified[key] = (client_id, time.monotonic() + self.CACHE_SECONDS)
        return AuthResult(success=True, auth_data=client_id)


class SubmissionHandler:
    """aiosmtpd handler: the DPI's documents come in here."""

    def __init__(
        self,
        db: Database,
        sealer: Sealer,
        settings: Settings,
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.settings = settings
        self.on_accepted = on_accepted
        # Concurrent submissions share a transaction and its commit (see db.group_commit). A DPI waits
        # on the line: at most `database.commit_timeout` for the store to take it, then 451.
        self.commit_timeout = settings.database.commit_timeout
        self.commits = GroupCommit(db, trail_savepoint, name="intake-commit", lock_timeout=self.commit_timeout)

    async def handle_MAIL(self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str, mail_options: list[str]) -> str:
        try:
            normalize_address(address)
        except InvalidIdentifier:
            return "553 5.1.7 The sender address is not valid; receipts go back to it"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS} per message)"
        try:
            await asyncio.to_thread(self._check_recipient, address, session.auth_data)
        except Refused as exc:
            return exc.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    def _check_recipient(self, address: str, client_id: Any) -> None:
        try:
            with self.db.reading() as db_session:
                check_recipient(db_session, address, self.settings.mail.domain)
        except Refused as exc:
            with self.db.transaction() as db_session:
                record_refusal(db_session, actor=f"dpi:{client_id}", reply=exc.reply, document_id=None, recipient=address)
            raise

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        reply = await self._data(session, envelope)
        SUBMISSIONS.labels(reply[:3]).inc()
        return reply

    async def _data(self, session: SmtpSession, envelope: Envelope) -> str:
        client_id = session.auth_data
        if not isinstance(client_id, int):
            return "530 5.7.0 Authentication required"
        raw = envelope.original_content or b""
        # Longer bare-LF data overflows aiosmtpd's line limit and is answered while reading (`bare_lf`).
        if has_bare_lf(raw):
            await asyncio.to_thread(self._audit_refusal, client_id, BARE_LF, None)
            return BARE_LF
        if has_bare_cr(raw):
            await asyncio.to_thread(self._audit_refusal, client_id, BARE_CR, None)
            return BARE_CR
        try:
            parsed = await asyncio.to_thread(parse_submission, raw)
        except InvalidSubmission as exc:
            reply = f"554 5.6.0 {exc}"
            await asyncio.to_thread(self._audit_refusal, client_id, reply, None)
            return reply
        # Parsed: the message itself is no longer needed. Dropped before sealing, a 34 MB message is not
        # held while its 25 MB document is encrypted and stored.
        envelope.content = envelope.original_content = None
        del raw
        # Encrypted before the transaction: AES-GCM holds no lock, and the clear bytes go before the rows are written.
        parsed, documents = await asyncio.to_thread(seal_documents, self.sealer, parsed)
        try:
            peer = str(session.peer[0]) if isinstance(session.peer, tuple) else None
            accepted = await asyncio.to_thread(self._store, client_id, envelope, parsed, documents, peer)
        except Refused as exc:
            await asyncio.to_thread(self._audit_refusal, client_id, exc.reply, parsed.document_id)
            return exc.reply
        except CommitTimeout:
            log.warning("submission not stored: the database did not take the commit within %ss "
                        "(database.commit_timeout); answered 451", self.commit_timeout)
            return TEMPFAIL
        if self.on_accepted is not None:
            self.on_accepted()
        log.info(
            "accepted %s document %s: %d new deliveries, %d duplicates",
            accepted.submission_id, parsed.document_id, accepted.new_deliveries, accepted.duplicates,
        )
        return f"250 2.0.0 queued as {accepted.submission_id}"

    def _store(self, client_id: int, envelope: Envelope, parsed: Any, documents: list[SealedDocument],
               peer: str | None = None) -> Any:
        # The recipients are vetted first, in a read-only transaction: under load the write lock is
        # the scarce resource, and its holder should only write (see `vet_recipients` for the race).
        with self.db.reading() as db_session:
            physicians = vet_recipients(db_session, self.sealer, patient_id=parsed.patient_id,
                                        recipients=list(envelope.rcpt_tos), mail_domain=self.settings.mail.domain)
        # A concurrent identical submission can win the race on the idempotency
        # key; the retry then sees it as a duplicate and answers with its id.
        # Deadlocks and lost connections are retried too; what still fails answers 451.
        # The result comes back only once the group's transaction is committed.
        def work(db_session: Session) -> Any:
            return accept_submission(
                db_session,
                self.sealer,
                dpi_client_id=client_id,
                envelope_sender=envelope.mail_from or "",
                physicians=physicians,
                parsed=parsed,
                documents=documents,
                mail_domain=self.settings.mail.domain,
                hin_domains=self.settings.relay.hin_domains,
                peer=peer,
            )

        return self.commits.run(work, timeout=self.commit_timeout)

    def _audit_refusal(self, client_id: int, reply: str, document_id: str | None) -> None:
        try:
            with self.db.transaction() as db_session:
                record_refusal(db_session, actor=f"dpi:{client_id}", reply=reply, document_id=document_id, recipient=None)
        except SQLAlchemyError:
            log.exception("could not audit a refusal")

    async def handle_exception(self, error: Exception) -> str:
        """Any fault answers 451 4.3.0 (never aiosmtpd's 500 with internals); details go to the log."""
        log.error("submission fault: %s: %s", type(error).__name__, error, exc_info=error)
        return TEMPFAIL


def server_tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def smtp_factory(handler: SubmissionHandler, settings: Settings, authenticator: DpiAuthenticator,
                 processes: int = 1) -> Callable[[], SMTP]:
    """The protocol factory for `loop.create_server`, in one of `processes` accepting on the same socket."""
    tls_context = server_tls_context(settings)
    require_tls = settings.smtp.require_tls
    limiter = ConnectionLimiter(settings.smtp.max_connections, settings.smtp.max_connections_per_peer, processes)

    def factory() -> SMTP:
        return SubmissionSMTP(
            handler,
            hostname=settings.smtp.hostname,
            data_size_limit=settings.smtp.max_message_size,
            tls_context=tls_context,
            require_starttls=require_tls,
            auth_required=True,
            auth_require_tls=require_tls,
            authenticator=authenticator,
            # Three AUTH tries per connection, then 421 and a closed connection.
            command_call_limit={"AUTH": 3, "*": 1000},
            ident="myHUG gateway",
            limiter=limiter,
            data_timeout=settings.smtp.data_timeout,
            pre_auth_timeout=settings.smtp.pre_auth_timeout,
            allowed_peers=settings.smtp.submission_peers,
        )

    return factory
