"""IHE ATNA forwarding: audit events as RFC 5424 syslog messages over TLS with RFC 5425 octet counting.

The trail is the durable buffer: a cursor records the last event the
collector took. While the collector is down nothing is lost; events go out
in order once it is back (at least once: a connection that breaks mid-batch
re-sends from the cursor).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl

from sqlalchemy.orm import Session

from myhug.audit.fhir import to_fhir
from myhug.audit.models import AuditEvent, TrailCursor
from myhug.audit.trail import advance_cursor, events_after_cursor
from myhug.background import BackgroundLoop
from myhug.config.settings import Settings, parse_hostport
from myhug.db.base import utcnow
from myhug.db.leases import Leases
from myhug.db.session import Database

log = logging.getLogger(__name__)

FACILITY_AUTHPRIV = 10
SEVERITY = {"success": 5, "deferred": 4, "refused": 4, "failure": 3}  # notice, warning, error
CURSOR = "atna"
PEN = 32473  # the IANA private enterprise number reserved for documentation (RFC 5612)


def syslog_frame(event: AuditEvent, hostname: str, app_name: str) -> bytes:
    """One RFC 5425 frame: `MSG-LEN SP SYSLOG-MSG`, the message being RFC 5424 with the FHIR AuditEvent."""
    pri = FACILITY_AUTHPRIV * 8 + SEVERITY.get(event.outcome, 5)
    timestamp = event.occurred_at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    sd = f'[atna@{PEN} seq="{event.seq}" event="{event.event}" hash="{event.hash}"]'
    body = json.dumps(to_fhir(event), ensure_ascii=False, separators=(",", ":"))
    message = f"<{pri}>1 {timestamp} {hostname} {app_name} - AuditEvent {sd} ".encode() + b"\xef\xbb\xbf" + body.encode()
    return str(len(message)).encode() + b" " + message


class AtnaForwarder(BackgroundLoop):
    def __init__(self, db: Database, settings: Settings, batch: int = 200, owner: str = "atna") -> None:
        super().__init__()
        self.db = db
        self.settings = settings
        self.batch = batch
        self._down = False
        # One process forwards at a time: it leases the cursor for the batch it sends.
        self.leases = Leases(TrailCursor, TrailCursor.name == CURSOR, owner, settings.queue.lease_seconds)

    def _take_turn(self) -> bool:
        """Lease the ATNA cursor (created on first use); False while another process forwards."""
        def step(session: Session) -> bool:
            if session.get(TrailCursor, CURSOR) is None:
                session.add(TrailCursor(name=CURSOR, last_seq=0, next_attempt_at=utcnow(), attempts=0))
                session.flush()
            return bool(self.leases.claim(session, 1, [TrailCursor.name]))

        return self.db.run(step)

    def _end_turn(self) -> None:
        self.db.run(self.leases.release)

    def _pending(self) -> tuple[list[bytes], int]:
        def step(session: Session) -> tuple[list[bytes], int]:
            events = events_after_cursor(session, CURSOR, self.batch)
            frames = [syslog_frame(e, self.settings.smtp.hostname, self.settings.audit.app_name) for e in events]
            return frames, events[-1].seq if events else 0

        return self.db.run(step)

    def _advance(self, last_seq: int) -> None:
        def step(session: Session) -> None:
            advance_cursor(session, CURSOR, last_seq)

        self.db.run(step)

    async def run_once(self) -> int:
        target = self.settings.audit.syslog
        if not target:
            return 0
        if not await asyncio.to_thread(self._take_turn):
            return 0
        try:
            return await self._forward(target)
        finally:
            await asyncio.to_thread(self._end_turn)

    async def _forward(self, target: str) -> int:
        frames, last_seq = await asyncio.to_thread(self._pending)
        if not frames:
            return 0
        host, port = parse_hostport(target)
        context = ssl.create_default_context(cafile=self.settings.audit.syslog_ca_file)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout=15)
            try:
                for frame in frames:
                    writer.write(frame)
                await asyncio.wait_for(writer.drain(), timeout=30)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), timeout=5)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            if not self._down:
                log.warning("ATNA collector %s unreachable (%s); events stay buffered in the trail", target, exc)
                self._down = True
            return 0
        if self._down:
            log.info("ATNA collector %s reachable again", target)
            self._down = False
        await asyncio.to_thread(self._advance, last_seq)
        return len(frames)
