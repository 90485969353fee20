"""`myhug serve` as a process: stopped and started again, nothing is lost and queued work resumes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.directory.service import DpiCredentials
from myhug.dpi_client import Attachment, build_submission, sample_pdf, submit
from myhug.gateway.models import Delivery
from myhug.mailbox.models import MailboxItem
from tests.conftest import Directory, free_port
from tests.helpers import count, eventually


def _serve(settings: Settings, role: str, smtp_port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "MYHUG_DATABASE__URL": settings.database_url,
        "MYHUG_SMTP__LISTEN": f"127.0.0.1:{smtp_port}",
        "MYHUG_WEB__LISTEN": f"127.0.0.1:{free_port()}",
        "MYHUG_SMTP__INBOUND_LISTEN": f"127.0.0.1:{free_port()}",
        "MYHUG_QUEUE__POLL_INTERVAL": "0.1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "myhug.cli", "serve", "--data-dir", str(settings.data_dir), "--role", role],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc


def _wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("myhug serve did not start listening")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


async def test_queued_documents_survive_a_restart_and_are_deposited(
    settings: Settings, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    port = free_port()
    # First process: intake only, so the accepted documents stay queued.
    proc = _serve(settings, "smtp", port)
    _wait_listening(port, proc)
    queue_ids = []
    for i in range(5):
        message = build_submission(
            sender="dpi@hug.localhost", recipients=[doctor.address], patient_id="P-1001", document_id=f"DOC-R{i}",
            attachments=[Attachment("a.pdf", sample_pdf(f"r{i}"))],
        )
        reply = await submit(message, host="127.0.0.1", port=port, username=dpi.username, password=dpi.password,
                             cafile=str(settings.tls_cert_file))
        assert reply.code == 250, reply.text
        queue_ids.append(reply.queue_id)
    out = _stop(proc)
    assert "Traceback" not in out
    assert count(gateway, Delivery, Delivery.state == "queued") == 5
    assert count(gateway, MailboxItem) == 0

    # Second process: the full server; the queued work resumes.
    port = free_port()
    proc = _serve(settings, "smtp,worker,web", port)
    try:
        _wait_listening(port, proc)
        await eventually(lambda: count(gateway, MailboxItem) == 5, timeout=30, what="deposits after restart")
        assert count(gateway, Delivery, Delivery.state == "deposited") == 5
    finally:
        out = _stop(proc)
    assert "Traceback" not in out
