"""`smtp.processes`: several processes accept submissions on one address, wake the worker, and die with the server."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import Counter
from pathlib import Path

import httpx

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.directory.service import DpiCredentials
from myhug.mailbox.models import MailboxItem
from tests.conftest import Directory, free_port
from tests.helpers import (
    alive,
    children,
    count,
    eventually,
    serve_process,
    stop_process,
    submit_document,
    wait_listening,
)
from tests.integration.test_web_health import samples

ACCEPTED = re.compile(r"myhug\.gateway\.server\[(\d+)\]: accepted \S+ document (DOC-\d+):")


async def test_three_intake_processes_share_the_port_wake_the_worker_and_stop_with_the_server(
    settings: Settings, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path: Path
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    port = free_port()
    log = tmp_path / "serve.log"
    # The worker runs in the server; it polls every 60 s, so documents deposited sooner were woken for.
    web_port = free_port()
    server = serve_process(settings, "smtp,web,worker", log, smtp_port=port, MYHUG_SMTP__PROCESSES="3",
                           MYHUG_QUEUE__POLL_INTERVAL="60", MYHUG_WEB__LISTEN=f"127.0.0.1:{web_port}")
    replies: list[int] = []

    async def send(n: int) -> None:
        replies.append(await submit_document(settings, port, (dpi.username, dpi.password), doctor.address, f"DOC-{n}"))

    try:
        wait_listening(port, server, log)
        await eventually(lambda: len(children(server.pid)) == 2, timeout=30, what="two more intake processes")
        intake = children(server.pid)
        await eventually(lambda: log.read_text(errors="replace").count("SMTP submission listening") == 3,
                         timeout=30, what="three processes listening")
        # A second gateway on the same address is refused, as a plain bind would be, not let in by SO_REUSEPORT.
        other_log = tmp_path / "other.log"
        other = serve_process(settings, "smtp", other_log, smtp_port=port, MYHUG_SMTP__PROCESSES="2")
        try:
            assert other.wait(timeout=60) != 0
        finally:
            stop_process(other)
        assert "in use" in other_log.read_text(errors="replace")

        for first in range(0, 36, 12):
            await asyncio.gather(*(send(n) for n in range(first, first + 12)))
        assert replies == [250] * 36
        await eventually(lambda: count(gateway, MailboxItem) == 36, timeout=30, what="36 deposits")
        # One at a time: each is deposited long before the worker's next poll, whichever process took it.
        for n in range(36, 48):
            await send(n)
            await eventually(lambda n=n: count(gateway, MailboxItem) == n + 1, timeout=10, what=f"DOC-{n} woken for")
        accepted_by = {document: int(pid) for pid, document in ACCEPTED.findall(log.read_text(errors="replace"))}
        assert len(accepted_by) == 48 and replies == [250] * 48
        by_process = Counter(accepted_by.values())
        assert len(by_process) >= 2, by_process  # the kernel spread the connections over the processes
        assert set(by_process) <= intake | {server.pid}
        assert {accepted_by[f"DOC-{n}"] for n in range(36, 48)} & intake  # a child's wake-up was tested
        # /metrics (the parent's) counts the submissions of every process, summed from their files.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}") as client:
            exposed = samples((await client.get("/metrics")).text)
        assert exposed[("myhug_submissions_total", (("code", "250"),))] == 48
        assert ("process_cpu_seconds_total", ()) in exposed

        server.send_signal(signal.SIGKILL)  # the server dies without a word to its children
        server.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in intake) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not any(alive(pid) for pid in intake)  # no orphan keeps accepting on the port
    finally:
        stop_process(server)
