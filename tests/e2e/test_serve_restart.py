"""`myhug serve` as a process: stopped and started again, nothing is lost and queued work resumes."""

from __future__ import annotations

from pathlib import Path

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.delivery.models import Delivery
from myhug.directory.service import DpiCredentials
from myhug.dpi_client import Attachment, build_submission, sample_pdf, submit
from myhug.mailbox.models import MailboxItem
from tests.conftest import Directory
from tests.helpers import count, eventually, free_port, serve_process, stop_process, wait_listening


async def test_queued_documents_survive_a_restart_and_are_deposited(
    settings: Settings, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path: Path
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    port = free_port()
    # First process: intake only, so the accepted documents stay queued.
    log = tmp_path / "serve.log"
    proc = serve_process(settings, "smtp", log, smtp_port=port)
    wait_listening(port, proc, log)
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
    assert stop_process(proc) == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    assert count(gateway, Delivery, Delivery.state == "queued") == 5
    assert count(gateway, MailboxItem) == 0

    # Second process: the full server; the queued work resumes.
    port = free_port()
    log = tmp_path / "serve-2.log"
    proc = serve_process(settings, "smtp,worker,web", log, smtp_port=port)
    try:
        wait_listening(port, proc, log)
        await eventually(lambda: count(gateway, MailboxItem) == 5, timeout=30, what="deposits after restart")
        assert count(gateway, Delivery, Delivery.state == "deposited") == 5
    finally:
        assert stop_process(proc) == 0, log.read_text()
    assert "Traceback" not in log.read_text()
