"""IHE ATNA: audit events reach a TLS syslog collector as RFC 5424 in RFC 5425 frames, none lost while it is down."""

from __future__ import annotations

import asyncio
import json
import re

from myhug.audit.trail import record
from myhug.components import Components
from myhug.supervisor import start
from tests.conftest import CertificateAuthority, free_port
from tests.helpers import eventually

FRAME_HEAD = re.compile(rb"^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[[^\]]*\]) \xef\xbb\xbf")


class SyslogReceiver:
    """RFC 5425: octet-counted frames over TLS."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = await reader.readuntil(b" ")
                self.messages.append(await reader.readexactly(int(length[:-1])))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _append(gateway: Components, n: int, start_at: int = 0) -> None:
    with gateway.db.transaction() as session:
        for i in range(n):
            record(session, "login", actor=f"web:{start_at + i}")


async def test_frames_are_well_formed_and_nothing_is_lost_while_the_collector_is_down(
    gateway: Components, test_ca: CertificateAuthority
) -> None:
    port = free_port()
    gateway.settings.audit.syslog = f"127.0.0.1:{port}"
    gateway.settings.audit.syslog_ca_file = str(test_ca.file)
    run = await start(gateway, ("worker",))
    try:
        _append(gateway, 5)
        await asyncio.sleep(1.5)  # the forwarder tries, the collector is down: nothing may be dropped
        receiver = SyslogReceiver()
        server = await asyncio.start_server(receiver.handle, "127.0.0.1", port, ssl=test_ca.server_context())
        try:
            _append(gateway, 5, start_at=5)
            assert run.atna is not None
            run.atna.wake()
            await eventually(lambda: len(receiver.messages) >= 10, timeout=30, what="ten syslog messages")
        finally:
            server.close()
            await server.wait_closed()
    finally:
        await run.stop()
    seqs = []
    for message in receiver.messages:
        head = FRAME_HEAD.match(message)
        assert head, message[:120]
        pri, timestamp, hostname, app, procid, msgid, sd = (g.decode() for g in head.groups())
        assert pri == str(10 * 8 + 5) and timestamp.endswith("Z") and app == "myhug" and msgid == "AuditEvent"
        seqs.append(int(re.search(r'seq="(\d+)"', sd).group(1)))  # type: ignore[union-attr]
        body = json.loads(message[head.end():])
        assert body["resourceType"] == "AuditEvent"
    assert seqs == list(range(1, 11))
