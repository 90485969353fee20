"""Outbound SMTP through a smarthost with aiosmtplib: TLS required and verified, never plaintext fallback.

Errors are translated at this boundary into `RelayTemporaryError` (4xx,
timeouts, connection loss, TLS failure: retry later) and
`RelayPermanentError` (5xx: give up). Senders of outbound mail depend on the
`MailSender` protocol: a smarthost, or the null sender of an empty setting.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import NoReturn, Protocol

import aiosmtplib

from myhug.config.settings import RelaySettings, parse_hostport
from myhug.crypto.dkim import canonical_crlf
from myhug.errors import PermanentFailure, TemporaryFailure
from myhug.instruments import RELAY_ERRORS
from myhug.mail.mime import SpooledMessage

log = logging.getLogger(__name__)


class RelayTemporaryError(TemporaryFailure):
    pass


class RelayPermanentError(PermanentFailure):
    pass


@dataclass(frozen=True)
class Smarthost:
    host: str
    port: int
    tls_required: bool
    ca_file: str | None

    @classmethod
    def from_settings(cls, hostport: str, relay: RelaySettings) -> Smarthost:
        host, port = parse_hostport(hostport)
        return cls(host, port, relay.tls == "required", relay.ca_file)

    def tls_context(self) -> ssl.SSLContext:
        stamp = os.stat(self.ca_file).st_mtime_ns if self.ca_file and os.path.exists(self.ca_file) else None
        return _client_tls_context(self.ca_file, stamp)


@functools.lru_cache(maxsize=8)
def _client_tls_context(ca_file: str | None, stamp: int | None) -> ssl.SSLContext:
    """One verifying client context per CA file (and its modification time, so a replaced file is read again).

    Loading the system CA store took about 35 ms on the 2-core machine, for
    every HIN message, receipt and notification. A context is safe to share
    between connections and is not changed once made.
    """
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class DsnRequest:
    """RFC 3461: ask for delivery status notifications, matched back by ENVID."""

    envid: str
    notify: str = "SUCCESS,FAILURE,DELAY"
    ret: str = "HDRS"


# What a sender takes: a message built by the e-mail package, bytes, or a message spooled to a file.
Outbound = EmailMessage | bytes | SpooledMessage

# What talking to a relay can raise: its replies (aiosmtplib's exceptions), the network, TLS, time.
RELAY_FAULTS = (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError)


async def _connect(smarthost: Smarthost, timeout: float) -> aiosmtplib.SMTP:
    """An open connection to the smarthost: STARTTLS mandatory (the certificate verified) unless tls is `none`.

    start_tls=True makes aiosmtplib fail the connection if the relay offers no STARTTLS.
    """
    client = aiosmtplib.SMTP(
        hostname=smarthost.host,
        port=smarthost.port,
        timeout=timeout,
        start_tls=smarthost.tls_required,
        tls_context=smarthost.tls_context() if smarthost.tls_required else None,
        validate_certs=True,
    )
    try:
        await client.connect()
        if not client.esmtp_extensions:
            await client.ehlo()  # after STARTTLS, aiosmtplib forgets the extensions until the next EHLO
    except RELAY_FAULTS as exc:
        client.close()
        _raise_relay_error(smarthost, exc)
    except BaseException:  # cancelled: no half-open connection left behind
        client.close()
        raise
    return client


async def _transaction(smarthost: Smarthost, client: aiosmtplib.SMTP, message: Outbound, *,
                       sender: str, recipients: list[str], dsn: DsnRequest | None) -> str:
    """MAIL, RCPT, DATA on an open connection; errors become `RelayTemporaryError`/`RelayPermanentError`.

    Like aiosmtplib's `sendmail` (SIZE declared, refused only if every
    recipient is), but the message is written in pieces as the connection
    drains: `sendmail` copied a message three times (line ends, dot-stuffing,
    the final dot) and buffered it whole in the transport.
    """
    if isinstance(message, SpooledMessage):
        chunks: Iterable[bytes] = message.chunks()
        size = message.size
    else:
        raw = canonical_crlf(message if isinstance(message, bytes) else message.as_bytes())
        chunks, size = [raw], len(raw)
    mail_options: list[str] = [f"SIZE={size}"] if client.supports_extension("size") else []
    rcpt_options: list[str] = []
    if dsn is not None and client.supports_extension("dsn"):
        mail_options += [f"RET={dsn.ret}", f"ENVID={dsn.envid}"]
        rcpt_options = [f"NOTIFY={dsn.notify}"]
    try:
        await client.mail(sender, options=mail_options)
        refused: list[aiosmtplib.SMTPRecipientRefused] = []
        for recipient in recipients:
            try:
                await client.rcpt(recipient, options=rcpt_options)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused.append(exc)
        if len(refused) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(refused)
        for refusal in refused:
            log.warning("relay %s refused one of several recipients: %s %s", smarthost.host, refusal.code,
                        refusal.message)
        reply = await _data(client, chunks)
    except RELAY_FAULTS as exc:
        _raise_relay_error(smarthost, exc)
    return reply


async def _data(client: aiosmtplib.SMTP, chunks: Iterable[bytes]) -> str:
    """DATA: the pieces (each ending at a line end, but the last) dot-stuffed and written as the connection drains.

    The flow control is aiosmtplib's own (`_drain_helper`, the protocol's
    half of asyncio's `StreamWriter.drain`); aiosmtplib has no public call
    for writing a message in pieces. A relay that stops reading for the
    client's timeout is a `TimeoutError` (retry later), never a hang.
    """
    start = await client.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = client.protocol
    assert protocol is not None  # execute_command raised otherwise
    at_line_start = True
    for chunk in chunks:
        if not chunk:
            continue
        if not at_line_start:
            raise ValueError("a message piece must end at a line end")
        if chunk.startswith(b"."):
            protocol.write(b".")
        protocol.write(chunk.replace(b"\r\n.", b"\r\n.."))  # RFC 5321 4.5.2; no copy without such a line
        at_line_start = chunk.endswith(b"\r\n")
        await asyncio.wait_for(protocol._drain_helper(), client.timeout)
    if not at_line_start:
        protocol.write(b"\r\n")
    end = await client.execute_command(b".")
    if end.code != 250:
        raise aiosmtplib.SMTPDataError(end.code, end.message)
    return end.message


def _raise_relay_error(smarthost: Smarthost, exc: BaseException) -> NoReturn:
    """Translate what aiosmtplib or the network raised into the relay's error kinds, counted by class."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0]
        RELAY_ERRORS.labels(smarthost.host, "5xx" if first.code >= 500 else "4xx").inc()
        error: Exception = (RelayPermanentError if first.code >= 500 else RelayTemporaryError)(
            f"relay refused recipient: {first.code} {first.message}"
        )
        raise error from None
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        RELAY_ERRORS.labels(smarthost.host, "5xx" if exc.code >= 500 else "4xx").inc()
        if exc.code >= 500:
            raise RelayPermanentError(f"relay answered {exc.code} {exc.message}") from None
        raise RelayTemporaryError(f"relay answered {exc.code} {exc.message}") from None
    if isinstance(exc, RELAY_FAULTS):
        tls = isinstance(exc, ssl.SSLError) or "tls" in str(exc).lower() or "certificate" in str(exc).lower()
        RELAY_ERRORS.labels(smarthost.host, "tls" if tls else "connect").inc()
        raise RelayTemporaryError(f"relay unreachable or TLS failed: {type(exc).__name__}: {exc}") from None
    raise exc


async def _quit(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


class MailSender(Protocol):
    """Where one kind of outbound mail goes (HIN messages, receipts to the DPI, notifications)."""

    async def send(self, message: Outbound, *, sender: str, recipients: list[str],
                   dsn: DsnRequest | None = None) -> str:
        """Send one message; returns the relay's reply, or raises `TemporaryFailure`/`PermanentFailure`."""
        ...


class SmarthostSender:
    """A `MailSender` through a smarthost, keeping a few idle connections for the next messages.

    Like Postfix's connection cache (scache): a connection that has just
    carried a message carries the next one within `IDLE_SECONDS`, saving the
    TCP and TLS handshakes and the EHLOs (three connections per HIN
    document: the message and two receipts). A connection that fails is
    closed, never reused; a cached one the relay has meanwhile closed is
    replaced by a fresh one, once, before anything is reported.
    """

    IDLE_SECONDS = 5.0
    MAX_MESSAGES = 100  # per connection, then a fresh one (the relay's own limits stay far)
    MAX_IDLE = 8

    def __init__(self, smarthost: Smarthost, timeout: float = 60) -> None:
        self.smarthost = smarthost
        self.timeout = timeout
        self._idle: list[tuple[aiosmtplib.SMTP, float, int]] = []  # (connection, idle since, messages sent)

    async def send(self, message: Outbound, *, sender: str, recipients: list[str],
                   dsn: DsnRequest | None = None) -> str:
        cached = self._take()
        if cached is not None:
            client, sent = cached
            try:
                reply = await _transaction(self.smarthost, client, message, sender=sender, recipients=recipients,
                                           dsn=dsn)
            except RelayTemporaryError:
                stale = not client.is_connected  # the relay closed it while idle, rather than answering 4xx
                client.close()
                if not stale:
                    raise
                log.debug("cached connection to %s was closed by the relay; opening a fresh one", self.smarthost.host)
            except BaseException:
                client.close()
                raise
            else:
                await self._keep(client, sent + 1)
                return reply
        client = await _connect(self.smarthost, self.timeout)
        try:
            reply = await _transaction(self.smarthost, client, message, sender=sender, recipients=recipients, dsn=dsn)
        except BaseException:
            client.close()
            raise
        await self._keep(client, 1)
        return reply

    def _take(self) -> tuple[aiosmtplib.SMTP, int] | None:
        now = time.monotonic()
        while self._idle:
            client, since, sent = self._idle.pop()
            if client.is_connected and now - since < self.IDLE_SECONDS:
                return client, sent
            client.close()
        return None

    async def _keep(self, client: aiosmtplib.SMTP, sent: int) -> None:
        if sent >= self.MAX_MESSAGES or len(self._idle) >= self.MAX_IDLE or not client.is_connected:
            await _quit(client)
            return
        self._idle.append((client, time.monotonic(), sent))

    async def close(self) -> None:
        """QUIT the idle connections (at shutdown)."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(client) for client, _, _ in idle), return_exceptions=True)


class NotConfigured(TemporaryFailure):
    """No smarthost is configured for this kind of mail: it waits (and backs off) until one is."""


class NullSender:
    """The `MailSender` of a relay setting left empty: sends nothing, says so once in the log."""

    def __init__(self, setting: str, consequence: str) -> None:
        self.setting = setting
        self.consequence = consequence
        self._warned = False

    async def send(self, message: Outbound, *, sender: str, recipients: list[str],
                   dsn: DsnRequest | None = None) -> str:
        if not self._warned:
            log.warning("%s is not set: %s", self.setting, self.consequence)
            self._warned = True
        raise NotConfigured(f"{self.setting} is not configured")


def mail_sender(setting: str, hostport: str | None, relay: RelaySettings, consequence: str) -> MailSender:
    """The sender for one relay setting: through its smarthost, or the null sender if it is empty."""
    if hostport:
        return SmarthostSender(Smarthost.from_settings(hostport, relay))
    return NullSender(setting, consequence)
