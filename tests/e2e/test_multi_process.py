"""Several `myhug serve` processes on one database: they start together on an empty database, and under
load (1,000 documents, three workers), with a worker killed by `kill -9` and restarted, they lose nothing,
duplicate nothing and never deadlock."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.engine import make_url

from myhug.audit.models import AuditEvent
from myhug.components import Components
from myhug.config.settings import Settings
from myhug.delivery.models import Delivery
from myhug.directory.models import Physician
from myhug.directory.service import DpiCredentials
from myhug.dpi_client import Attachment, build_submission, sample_pdf, submit
from myhug.mailbox.models import MailboxItem
from tests.conftest import PG_URL, Directory, MailSink, free_port
from tests.helpers import count, eventually, serve_process, stop_process, wait_listening

PG_LOG = os.environ.get("MYHUG_TEST_PG_LOG", "")


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all (PostgreSQL: a new database; SQLite: a new file)."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"myhug_empty_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_three_processes_started_at_once_on_an_empty_database_all_come_up(
    settings: Settings, empty_database_url: str, tmp_path: Path
) -> None:
    logs = [tmp_path / f"serve-{n}.log" for n in range(3)]
    procs = [serve_process(settings, "worker", log, database_url=empty_database_url) for log in logs]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all("delivery worker" in log.read_text(errors="replace") for log in logs):
                break
            assert all(p.poll() is None for p in procs), "\n".join(log.read_text() for log in logs)
            time.sleep(0.2)
        else:
            raise AssertionError("not every process started:\n" + "\n".join(log.read_text() for log in logs))
    finally:
        codes = [stop_process(p) for p in procs]
    text_of_logs = "\n".join(log.read_text(errors="replace") for log in logs)
    assert codes == [0, 0, 0], text_of_logs
    assert "cannot migrate" not in text_of_logs and "Traceback" not in text_of_logs


@pytest.mark.postgresql
async def test_three_workers_under_load_with_one_killed_lose_nothing_duplicate_nothing_never_deadlock(
    mail_sink: MailSink, settings: Settings, gateway: Components, dpi: DpiCredentials, directory: Directory,
    tmp_path: Path,
) -> None:
    assert PG_LOG, "MYHUG_TEST_PG_LOG must name the PostgreSQL server log (.ci/run sets it)"
    log_start = Path(PG_LOG).stat().st_size
    doctor = directory.hosted(consents=("P-1001",))
    with gateway.db.transaction() as session:  # notifications on, at each document
        session.execute(update(Physician).where(Physician.id == doctor.id)
                        .values(notification_mode="each", email="marie.dupont@example.ch"))
    port = free_port()
    front = serve_process(settings, "smtp,web", tmp_path / "front.log", smtp_port=port)
    # Every document notified (no coalescing): each one's "notified" event is counted below.
    workers = [serve_process(settings, "worker", tmp_path / f"worker-{n}.log", MYHUG_MAILBOX__NOTIFY_MIN_INTERVAL="0")
               for n in range(3)]
    replies: list[int] = []
    try:
        wait_listening(port, front, tmp_path / "front.log")

        async def client(n: int) -> None:
            for i in range(50):
                message = build_submission(
                    sender="dpi@hug.localhost", recipients=[doctor.address], patient_id="P-1001",
                    document_id=f"DOC-{n}-{i}", attachments=[Attachment("a.pdf", sample_pdf(f"{n}-{i}"))])
                reply = await submit(message, host="127.0.0.1", port=port, username=dpi.username,
                                     password=dpi.password, cafile=str(settings.tls_cert_file), timeout=60)
                replies.append(reply.code)

        load = asyncio.gather(*(client(n) for n in range(20)))
        await eventually(lambda: count(gateway, MailboxItem) >= 250, timeout=180, what="250 deposits")
        workers[0].send_signal(signal.SIGKILL)  # mid-run, with leases held
        workers[0].wait(timeout=10)
        workers[0] = serve_process(settings, "worker", tmp_path / "worker-0b.log")
        await load
        load_end = time.monotonic()
        await eventually(lambda: count(gateway, MailboxItem) == 1000, timeout=120, what="every document deposited")
        assert time.monotonic() - load_end <= 120
        await eventually(lambda: count(gateway, AuditEvent, AuditEvent.event == "notified") >= 1000, timeout=90,
                         what="every document notified")
    finally:
        for proc in (front, *workers):
            stop_process(proc)
    assert replies == [250] * 1000
    with gateway.db.reading() as session:
        states = Counter(session.scalars(select(Delivery.state)))
        per_delivery = Counter(session.scalars(select(MailboxItem.delivery_id)))
        notified = Counter(session.scalars(select(AuditEvent.delivery_id).where(AuditEvent.event == "notified")))
        deposited_events = session.scalar(select(func.count()).select_from(AuditEvent)
                                          .where(AuditEvent.event == "deposited"))
    assert states == {"deposited": 1000}
    assert set(per_delivery.values()) == {1} and len(per_delivery) == 1000  # deposited exactly once
    assert deposited_events == 1000
    assert set(notified.values()) == {1} and len(notified) == 1000  # no document notified twice
    with open(PG_LOG, "rb") as server_log:
        server_log.seek(log_start)
        assert b"deadlock detected" not in server_log.read()
