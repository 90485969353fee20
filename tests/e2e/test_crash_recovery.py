"""`kill -9` of the only `myhug serve` under load, then a restart: every acknowledged document is on its
way within 60 seconds (short leases, renewed by a heartbeat while the work is alive)."""

from __future__ import annotations

import asyncio
import signal
import time

from sqlalchemy import select

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.delivery.models import Delivery
from myhug.directory.service import DpiCredentials
from myhug.dpi_client import Attachment, build_submission, sample_pdf, submit
from myhug.hin.keys import import_recipient_key
from tests.conftest import Directory, MailSink, free_port
from tests.helpers import eventually, serve_process, wait_listening
from tests.pgp_keys import make_keypair

RECOVERY_DEADLINE = 60.0  # seconds, from the restart (issue "safe to deploy", §3)


def _deliveries(gateway: Components) -> list[Delivery]:
    with gateway.db.reading() as session:
        rows = list(session.scalars(select(Delivery)))
        for row in rows:
            session.expunge(row)
        return rows


async def test_kill_9_under_load_then_restart_everything_acknowledged_is_on_its_way_within_60_s(
    hin_relay: MailSink, settings: Settings, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path
) -> None:
    assert settings.queue.lease_seconds == 30  # the default under test
    doctor = directory.hin(consents=("P-1001",))
    with gateway.db.transaction() as session:
        import_recipient_key(session, gateway.openpgp(), make_keypair(tmp_path / "k", doctor.address).public)
    hin_relay.delay = 4.0  # a slow relay: at the kill, deliveries are leased and in the middle of DATA
    port = free_port()
    # Production defaults for the lease (30 s); only the poll interval is quickened.
    log = tmp_path / "serve.log"
    proc = serve_process(settings, "smtp,worker", log, smtp_port=port)
    acknowledged: list[str] = []
    try:
        wait_listening(port, proc, log)

        async def one(n: int) -> None:
            message = build_submission(
                sender="dpi@hug.localhost", recipients=[doctor.address], patient_id="P-1001",
                document_id=f"DOC-K{n}", attachments=[Attachment("a.pdf", sample_pdf(f"k{n}"))],
            )
            try:
                reply = await submit(message, host="127.0.0.1", port=port, username=dpi.username,
                                     password=dpi.password, cafile=str(settings.tls_cert_file), timeout=20)
            except Exception:  # the kill cut this one off: not acknowledged, the DPI would resend it
                return
            if reply.code == 250:
                acknowledged.append(f"DOC-K{n}")

        load = [asyncio.create_task(one(n)) for n in range(30)]
        await eventually(lambda: hin_relay.receiving >= 2, timeout=60, what="relays in progress")
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        await asyncio.gather(*load)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    in_flight = [d for d in _deliveries(gateway) if d.lease_owner is not None and d.state == "queued"]
    assert in_flight, "the kill should have caught leased deliveries"
    assert len(acknowledged) >= 5
    hin_relay.delay = 0.0
    restarted_at = time.monotonic()
    proc = serve_process(settings, "smtp,worker", tmp_path / "serve-2.log")
    try:
        def all_relayed() -> bool:
            states = {d.document_id: d.state for d in _deliveries(gateway)}
            return all(states.get(document) == "relayed" for document in acknowledged)

        await eventually(all_relayed, timeout=RECOVERY_DEADLINE + 15, what="every acknowledged document relayed")
        elapsed = time.monotonic() - restarted_at
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert elapsed <= RECOVERY_DEADLINE, f"recovery took {elapsed:.0f} s"
    relayed = {d.document_id for d in _deliveries(gateway) if d.state == "relayed"}
    assert set(acknowledged) <= relayed
