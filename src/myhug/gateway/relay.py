"""Outbound SMTP through a smarthost with aiosmtplib: TLS required and verified, never plaintext fallback.

Errors are translated at this boundary into `RelayTemporaryError` (4xx,
timeouts, connection loss, TLS failure: retry later) and
`RelayPermanentError` (5xx: give up). Senders of outbound mail depend on the
`MailSender` protocol: a smarthost, or the null sender of an empty setting.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from myhug.config.settings import RelaySettings, parse_hostport
from myhug.errors import PermanentFailure, TemporaryFailure
from myhug.instruments import RELAY_ERRORS

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
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


@dataclass(frozen=True)
class DsnRequest:
    """RFC 3461: ask for delivery status notifications, matched back by ENVID."""

    envid: str
    notify: str = "SUCCESS,FAILURE,DELAY"
    ret: str = "HDRS"


async def relay_message(
    smarthost: Smarthost,
    message: EmailMessage | bytes,
    *,
    sender: str,
    recipients: list[str],
    timeout: float = 60,
    dsn: DsnRequest | None = None,
) -> str:
    """Send one message; returns the relay's reply text. STARTTLS is mandatory unless tls is `none`.

    Bytes are sent as they are (they may carry a DKIM signature over exactly them).
    DSN parameters are added only when the relay offers the DSN extension.
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
        # start_tls=True makes aiosmtplib fail the connection if the relay offers no STARTTLS.
        await client.connect()
        mail_options: list[str] = []
        rcpt_options: list[str] = []
        if not client.esmtp_extensions:
            await client.ehlo()  # after STARTTLS, aiosmtplib forgets the extensions until the next EHLO
        if dsn is not None and client.supports_extension("dsn"):
            mail_options = [f"RET={dsn.ret}", f"ENVID={dsn.envid}"]
            rcpt_options = [f"NOTIFY={dsn.notify}"]
        raw = message if isinstance(message, bytes) else message.as_bytes()
        _, reply = await client.sendmail(sender, recipients, raw, mail_options=mail_options, rcpt_options=rcpt_options)
        return reply
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0]
        RELAY_ERRORS.labels(smarthost.host, "5xx" if first.code >= 500 else "4xx").inc()
        error: Exception = (RelayPermanentError if first.code >= 500 else RelayTemporaryError)(
            f"relay refused recipient: {first.code} {first.message}"
        )
        raise error from None
    except aiosmtplib.SMTPResponseException as exc:
        RELAY_ERRORS.labels(smarthost.host, "5xx" if exc.code >= 500 else "4xx").inc()
        if exc.code >= 500:
            raise RelayPermanentError(f"relay answered {exc.code} {exc.message}") from None
        raise RelayTemporaryError(f"relay answered {exc.code} {exc.message}") from None
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
        tls = isinstance(exc, ssl.SSLError) or "tls" in str(exc).lower() or "certificate" in str(exc).lower()
        RELAY_ERRORS.labels(smarthost.host, "tls" if tls else "connect").inc()
        raise RelayTemporaryError(f"relay unreachable or TLS failed: {type(exc).__name__}: {exc}") from None
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


class MailSender(Protocol):
    """Where one kind of outbound mail goes (HIN messages, receipts to the DPI, notifications)."""

    async def send(self, message: EmailMessage | bytes, *, sender: str, recipients: list[str],
                   dsn: DsnRequest | None = None) -> str:
        """Send one message; returns the relay's reply, or raises `TemporaryFailure`/`PermanentFailure`."""
        ...


class SmarthostSender:
    """A `MailSender` through a smarthost (`relay_message`)."""

    def __init__(self, smarthost: Smarthost) -> None:
        self.smarthost = smarthost

    async def send(self, message: EmailMessage | bytes, *, sender: str, recipients: list[str],
                   dsn: DsnRequest | None = None) -> str:
        return await relay_message(self.smarthost, message, sender=sender, recipients=recipients, dsn=dsn)


class NotConfigured(TemporaryFailure):
    """No smarthost is configured for this kind of mail: it waits (and backs off) until one is."""


class NullSender:
    """The `MailSender` of a relay setting left empty: sends nothing, says so once in the log."""

    def __init__(self, setting: str, consequence: str) -> None:
        self.setting = setting
        self.consequence = consequence
        self._warned = False

    async def send(self, message: EmailMessage | bytes, *, sender: str, recipients: list[str],
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
