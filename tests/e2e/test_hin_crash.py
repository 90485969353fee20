"""A worker killed with SIGKILL in the middle of a relay: the delivery is made after restart, never lost."""

from __future__ import annotations

import email
import signal

from sqlalchemy import select

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.delivery.models import Delivery
from myhug.directory.service import DpiCredentials
from myhug.hin.keys import import_recipient_key
from myhug.supervisor import start
from tests.conftest import Directory, MailSink
from tests.helpers import eventually, message, send, serve_process
from tests.pgp_keys import make_keypair


def _state(gateway: Components) -> str:
    with gateway.db.transaction() as session:
        return session.scalars(select(Delivery.state)).one()


async def test_kill_9_mid_delivery_is_delivered_after_restart(
    hin_relay: MailSink, settings: Settings, gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path
) -> None:
    doctor = directory.hin(consents=("P-1001",))
    with gateway.db.transaction() as session:
        import_recipient_key(session, gateway.openpgp(), make_keypair(tmp_path / "k", doctor.address).public)
    hin_relay.delay = 5.0  # the relay is slow: the worker is caught mid-DATA
    intake = await start(gateway, ("smtp",))
    worker = serve_process(settings, "worker", tmp_path / "worker.log", MYHUG_QUEUE__LEASE_SECONDS="3")
    try:
        code, text = await send(intake, gateway, (dpi.username, dpi.password), message([doctor.address]), [doctor.address])
        assert code == 250, text
        await eventually(lambda: hin_relay.receiving == 1, timeout=30, what="relay in DATA")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert _state(gateway) == "queued"  # leased, not finished: nothing recorded as relayed
        hin_relay.delay = 0.0
        worker = serve_process(settings, "worker", tmp_path / "worker-2.log", MYHUG_QUEUE__LEASE_SECONDS="3")
        await eventually(lambda: _state(gateway) == "relayed", timeout=60, what="relayed after restart")
    finally:
        worker.kill()
        worker.wait(timeout=10)
        await intake.stop()
    # At least once; every copy has the same Message-ID, so the receiving side can drop a duplicate.
    ids = {email.message_from_bytes(raw)["Message-ID"] for _, _, raw in hin_relay.messages}
    assert len(hin_relay.messages) >= 1 and len(ids) == 1
