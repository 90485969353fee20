"""IHE ATNA feeds: the audit trail forwarded to audit record repositories, nothing lost while they are down.

Two transports, each following the trail with its own cursor:
- ITI-20 syslog: RFC 5424 messages in RFC 5425 frames over TLS, the payload
  being the DICOM audit message (default) or the FHIR AuditEvent JSON;
- RESTful ATNA: each FHIR AuditEvent POSTed to a FHIR audit repository.

The trail is the durable buffer: a cursor records the last event the
repository took. While it is down nothing is lost; events go out in order
once it is back (at least once: a connection that breaks mid-batch re-sends
from the cursor).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

import httpx
from sqlalchemy.orm import Session

from myhug.audit.balp import AuditSource
from myhug.audit.dicom import to_dicom
from myhug.audit.fhir import to_fhir
from myhug.audit.models import AuditEvent, TrailCursor
from myhug.audit.trail import advance_cursor, events_after_cursor
from myhug.background import BackgroundLoop
from myhug.config.settings import Settings, parse_hostport
from myhug.db.base import utcnow
from myhug.db.leases import Leases
from myhug.db.session import Database

log = logging.getLogger(__name__)

FACILITY_AUTHPRIV = 10  # ITI-20: security/authorization messages
SEVERITY = {"success": 5, "deferred": 4, "refused": 4, "failure": 4}  # ITI-20: notice (5) or warning (4)
MSGID = {"dicom": "IHE+RFC-3881", "fhir-json": "IHE+FHIR"}
BOM = b"\xef\xbb\xbf"


class FeedDown(Exception):
    """The repository did not take the batch; it stays in the trail for the next attempt."""


class Transport(Protocol):
    """Where a feed sends rendered events."""

    name: str

    def render(self, event: AuditEvent) -> bytes: ...

    async def send(self, payloads: list[bytes]) -> None: ...

    async def close(self) -> None: ...


def _software_version() -> str:
    try:
        return version("myhug-gateway")  # the distribution's name (pyproject), not the import package's
    except PackageNotFoundError:  # a source checkout without metadata
        return "0"


def _sd_value(value: str) -> str:
    """RFC 5424 §6.3.3: escape `"`, `\\` and `]` in PARAM-VALUE."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_frame(event: AuditEvent, settings: Settings) -> bytes:
    """One RFC 5425 frame, `MSG-LEN SP SYSLOG-MSG`, per ITI-20: facility 10, MSGID, UTF-8 payload after a BOM.

    Structured data uses the IANA-registered `meta` (the trail sequence number)
    and `origin` elements; the private `myhug@PEN` element only when the
    hospital configured its enterprise number.
    """
    audit = settings.audit
    source = AuditSource.of(settings)
    pri = FACILITY_AUTHPRIV * 8 + SEVERITY.get(event.outcome, 5)
    timestamp = event.occurred_at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    pen = audit.enterprise_number
    origin = f'[origin software="myhug" swVersion="{_software_version()}"'
    origin += f' enterpriseId="{pen}"]' if pen else "]"
    sd = f'[meta sequenceId="{event.seq}"]' + origin
    if pen:
        sd += f'[myhug@{pen} seq="{event.seq}" event="{_sd_value(event.event)}" hash="{event.hash}"]'
    if audit.syslog_format == "dicom":
        body = to_dicom(event, source)
    else:
        body = json.dumps(to_fhir(event, source), ensure_ascii=False, separators=(",", ":")).encode()
    header = f"<{pri}>1 {timestamp} {settings.smtp.hostname} {audit.app_name} - {MSGID[audit.syslog_format]} {sd} "
    message = header.encode() + BOM + body
    return str(len(message)).encode() + b" " + message


class SyslogTransport:
    """ITI-20 over RFC 5425 TLS syslog."""

    name = "atna"  # the cursor this feed has always used

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        target = settings.audit.syslog
        assert target is not None
        self.target = target
        self._context: ssl.SSLContext | None = None  # made at the first batch, then kept for every other

    def render(self, event: AuditEvent) -> bytes:
        return syslog_frame(event, self.settings)

    async def send(self, payloads: list[bytes]) -> None:
        host, port = parse_hostport(self.target)
        if self._context is None:
            # Once per process, not per batch: loading a CA store takes tens of milliseconds (the relay's
            # context, made per message with the system store, once cost 35 ms a message).
            self._context = ssl.create_default_context(cafile=self.settings.audit.syslog_ca_file)
        context = self._context
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout=15)
            try:
                for frame in payloads:
                    writer.write(frame)
                await asyncio.wait_for(writer.drain(), timeout=30)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), timeout=5)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise FeedDown(f"syslog collector {self.target}: {exc}") from exc

    async def close(self) -> None:
        """Nothing to release: each batch opens its own connection."""


class FhirRestTransport:
    """RESTful ATNA (ITI-20, FHIR): one POST of `application/fhir+json` per AuditEvent, in trail order."""

    name = "atna-fhir"

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        audit = settings.audit
        assert audit.fhir_endpoint is not None
        self.endpoint = audit.fhir_endpoint
        self.source = AuditSource.of(settings)
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if audit.fhir_token:
            headers["Authorization"] = f"Bearer {audit.fhir_token.get_secret_value()}"
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=audit.fhir_ca_file)
        self.client = httpx.AsyncClient(headers=headers, verify=verify, timeout=30, transport=transport)

    def render(self, event: AuditEvent) -> bytes:
        return json.dumps(to_fhir(event, self.source), ensure_ascii=False, separators=(",", ":")).encode()

    async def send(self, payloads: list[bytes]) -> None:
        for body in payloads:
            try:
                response = await self.client.post(self.endpoint, content=body)
            except httpx.HTTPError as exc:
                raise FeedDown(f"FHIR audit repository {self.endpoint}: {exc}") from exc
            if not response.is_success:
                # Refused or failing: keep the event and retry; skipping it would leave a hole in the record.
                raise FeedDown(f"FHIR audit repository {self.endpoint} answered {response.status_code}: "
                               f"{response.text[:200]}")

    async def close(self) -> None:
        await self.client.aclose()


class AuditFeed(BackgroundLoop):
    """Follows the trail with its own cursor and hands batches to one transport."""

    def __init__(self, db: Database, settings: Settings, transport: Transport, batch: int = 200,
                 owner: str = "atna") -> None:
        super().__init__()
        self.db = db
        self.transport = transport
        self.batch = batch
        self._down = False
        self.cursor = transport.name
        # One process forwards at a time: it leases the cursor for the batch it sends.
        self.leases = Leases(TrailCursor, TrailCursor.name == self.cursor, owner, settings.queue.lease_seconds)

    def _take_turn(self) -> bool:
        """Lease the cursor (created on first use); False while another process forwards."""
        def step(session: Session) -> bool:
            if session.get(TrailCursor, self.cursor) is None:
                session.add(TrailCursor(name=self.cursor, last_seq=0, next_attempt_at=utcnow(), attempts=0))
                session.flush()
            return bool(self.leases.claim(session, 1, [TrailCursor.name]))

        return self.db.run(step)

    def _end_turn(self) -> None:
        self.db.run(self.leases.release)

    def _pending(self) -> tuple[list[bytes], int]:
        def step(session: Session) -> tuple[list[bytes], int]:
            events = events_after_cursor(session, self.cursor, self.batch)
            return [self.transport.render(e) for e in events], events[-1].seq if events else 0

        return self.db.run(step)

    def _advance(self, last_seq: int) -> None:
        def step(session: Session) -> None:
            advance_cursor(session, self.cursor, last_seq)

        self.db.run(step)

    async def run(self, interval: float) -> None:
        try:
            await super().run(interval)
        finally:
            await self.transport.close()

    async def run_once(self) -> int:
        if not await asyncio.to_thread(self._take_turn):
            return 0
        try:
            return await self._forward()
        finally:
            await asyncio.to_thread(self._end_turn)

    async def _forward(self) -> int:
        payloads, last_seq = await asyncio.to_thread(self._pending)
        if not payloads:
            return 0
        try:
            await self.transport.send(payloads)
        except FeedDown as exc:
            if not self._down:
                log.warning("%s; events stay buffered in the trail", exc)
                self._down = True
            return 0
        if self._down:
            log.info("audit feed %s reachable again", self.cursor)
            self._down = False
        await asyncio.to_thread(self._advance, last_seq)
        return len(payloads)


def audit_feeds(db: Database, settings: Settings, owner: str) -> list[AuditFeed]:
    """One feed per configured repository (none when ATNA is not configured)."""
    transports: list[Transport] = []
    if settings.audit.syslog:
        transports.append(SyslogTransport(settings))
    if settings.audit.fhir_endpoint:
        transports.append(FhirRestTransport(settings))
    return [AuditFeed(db, settings, t, owner=owner) for t in transports]
