"""IHE ATNA: audit events reach a TLS syslog collector (ITI-20) and a FHIR audit repository, none lost while down."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pydantic import SecretStr

from myhug.audit import atna
from myhug.audit.trail import record
from myhug.components import Components
from myhug.supervisor import start
from tests.conftest import CertificateAuthority, free_port
from tests.helpers import eventually

FRAME_HEAD = re.compile(rb"^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) ((?:\[[^\]]*\])+) \xef\xbb\xbf")
SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).parents[1] / "fixtures" / "atna" / "dicom-audit-message.rng")))


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
    gateway: Components, test_ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts: list[ssl.SSLContext] = []

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = real(*args, **kwargs)
        if kwargs.get("cafile") == str(test_ca.file):  # the forwarder's (the collector's own has no cafile)
            contexts.append(context)
        return context

    real = ssl.create_default_context
    monkeypatch.setattr(atna.ssl, "create_default_context", counted)
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
            for feed in run.audit_feeds:
                feed.wake()
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
        assert pri == str(10 * 8 + 5) and timestamp.endswith("Z") and app == "myhug" and msgid == "IHE+RFC-3881"
        seqs.append(int(re.search(r'sequenceId="(\d+)"', sd).group(1)))  # type: ignore[union-attr]
        body = etree.fromstring(message[head.end():])
        SCHEMA.assertValid(body)
        assert body.find("EventIdentification/EventID").get("csd-code") == "110114"
    assert seqs == list(range(1, 11))
    assert len(contexts) == 1  # one TLS context for every batch and retry, not one each


class FhirRepository(BaseHTTPRequestHandler):
    """A FHIR audit repository: it takes POSTed AuditEvents, or answers 503 while `down` is set."""

    received: list[tuple[dict[str, str], dict[str, object]]] = []
    down = True

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).down:
            self.send_response(503)
            self.end_headers()
            return
        type(self).received.append((dict(self.headers), json.loads(body)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet: the test asserts on what arrived."""


async def test_restful_atna_posts_each_audit_event_in_order_after_an_outage(gateway: Components) -> None:
    FhirRepository.received = []
    FhirRepository.down = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), FhirRepository)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gateway.settings.audit.fhir_endpoint = f"http://127.0.0.1:{server.server_address[1]}/fhir/AuditEvent"
    gateway.settings.audit.fhir_token = SecretStr("s3cret-token")
    run = await start(gateway, ("worker",))
    try:
        _append(gateway, 3)
        await asyncio.sleep(1.5)  # the repository answers 503: the events must stay buffered
        assert FhirRepository.received == []
        FhirRepository.down = False
        _append(gateway, 2, start_at=3)
        for feed in run.audit_feeds:
            feed.wake()
        await eventually(lambda: len(FhirRepository.received) >= 5, timeout=30, what="five AuditEvents")
    finally:
        await run.stop()
        server.shutdown()
        server.server_close()
    headers = [h for h, _ in FhirRepository.received]
    assert all(h["Authorization"] == "Bearer s3cret-token" for h in headers)
    assert all(h["Content-Type"] == "application/fhir+json" for h in headers)
    resources = [r for _, r in FhirRepository.received]
    assert [r["id"] for r in resources] == [f"myhug-{n}" for n in range(1, 6)]
    assert all(r["resourceType"] == "AuditEvent" and r["type"]["code"] == "110114" for r in resources)
