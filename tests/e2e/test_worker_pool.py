"""`myhug serve` runs the delivery work in worker processes, one per core by default: a killed worker is
started again, nothing is lost or delivered twice, and stopping the server stops every child."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.delivery.models import Delivery
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


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


async def test_serve_runs_worker_processes_restarts_a_killed_one_and_stops_them_all(
    settings: Settings, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path: Path
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    port = free_port()
    log = tmp_path / "serve.log"
    # One intake process: the children counted here are the delivery workers.
    server = serve_process(settings, None, log, smtp_port=port, workers=2, MYHUG_SMTP__PROCESSES="1")
    replies: list[int] = []

    async def send(first: int, last: int) -> None:
        for i in range(first, last):
            replies.append(await submit_document(settings, port, (dpi.username, dpi.password), doctor.address,
                                                 f"DOC-{i}"))

    try:
        wait_listening(port, server, log)
        await eventually(lambda: len(children(server.pid)) == 2, timeout=30, what="two worker processes")
        first_workers = children(server.pid)
        # The workers (and their gpg) yield the cores to the intake in a burst: queue.worker_niceness, 10.
        expected = min(niceness(server.pid) + 10, 19)
        await eventually(lambda: {niceness(pid) for pid in first_workers} == {expected}, timeout=30,
                         what="niced workers")  # each nices itself as it starts
        await asyncio.gather(send(0, 15), send(15, 30))
        await eventually(lambda: count(gateway, MailboxItem) == 30, timeout=60, what="30 deposits")
        victim = min(first_workers)
        os.kill(victim, signal.SIGKILL)  # a worker dies; the server starts another
        await eventually(lambda: len(children(server.pid)) == 2 and victim not in children(server.pid),
                         timeout=30, what="the killed worker replaced")
        await asyncio.gather(send(30, 40), send(40, 50))
        await eventually(lambda: count(gateway, MailboxItem) == 50, timeout=60, what="50 deposits")
        workers = children(server.pid)
    finally:
        code = stop_process(server)
    assert code == 0, log.read_text(errors="replace")
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)  # stopping the server stopped its children
    assert replies == [250] * 50
    with gateway.db.reading() as session:
        states = Counter(session.scalars(select(Delivery.state)))
        per_delivery = Counter(session.scalars(select(MailboxItem.delivery_id)))
    assert states == {"deposited": 50}
    assert set(per_delivery.values()) == {1} and len(per_delivery) == 50
    text = log.read_text(errors="replace")
    assert "started 2 delivery worker processes" in text and "starting it again" in text
