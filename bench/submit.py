"""Submission benchmark: the gateway's SMTP intake against a bare aiosmtpd baseline, in the same run.

    python bench/submit.py [--messages 200] [--concurrency 4] [--size 100000] [--database-url URL]

(`--database-url` must name an empty PostgreSQL database; by default SQLite in a temp dir.)

The baseline is an aiosmtpd server with the same STARTTLS that answers 250
at once: it measures the machine, the TLS and the SMTP client. The gateway
figures are reported as ratios to it, because absolute numbers on a shared
machine are noise. "intake" is until the 250 (parse, policy, sealing,
durable commit); "end-to-end" is until every document is deposited.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from myhug.components import Components  # noqa: E402
from myhug.datadir import init_data_dir  # noqa: E402
from myhug.delivery.models import Delivery  # noqa: E402
from myhug.directory.identifiers import make_gln  # noqa: E402
from myhug.directory.service import (  # noqa: E402
    activate_with_password,
    add_dpi_client,
    hosted_address,
    register_physician,
    set_consent,
)
from myhug.dpi_client import Attachment, build_submission  # noqa: E402
from myhug.supervisor import start  # noqa: E402


class Accept:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 2.0.0 OK"


async def _send_all(messages: list[bytes], concurrency: int, send_one) -> float:  # type: ignore[no-untyped-def]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)

    async def worker() -> None:
        while not queue.empty():
            await send_one(queue.get_nowait())

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="myhug-bench-"))
    if args.database_url:
        os.environ["MYHUG_DATABASE__URL"] = args.database_url
    settings = init_data_dir(workdir / "data", smtp_listen="127.0.0.1:0", web_listen="127.0.0.1:0",
                             inbound_listen="127.0.0.1:0")
    settings.queue.poll_interval = 0.05
    gateway = Components.from_settings(settings)
    with gateway.db.transaction() as session:
        dpi = add_dpi_client(session, "bench")
        reg = register_physician(session, gln=make_gln("760100000123"), given_name="Bench", family_name="Mark",
                                 mobile="+41791234567", actor="bench")
        activate_with_password(session, reg.physician, reg.temporary_password or "", "benchmark password")
        set_consent(session, gateway.sealer.patient_ref("P-1"), reg.physician, granted=True, actor="bench")
        rcpt = hosted_address(reg.physician, settings.mail.domain) or ""
    payload = os.urandom(args.size)
    messages = [
        build_submission(sender="dpi@hug.localhost", recipients=[rcpt], patient_id="P-1", document_id=f"B-{i}",
                         attachments=[Attachment("doc.pdf", payload)], subject="bench").as_bytes()
        for i in range(args.messages)
    ]
    cafile = str(settings.tls_cert_file)

    # Baseline: aiosmtpd with the same certificate, answering 250 at once.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    port = _free_port()
    baseline = Controller(Accept(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    baseline.start()

    def sender(host: str, p: int, login: bool):  # type: ignore[no-untyped-def]
        """Both sides send the same raw bytes over a fresh STARTTLS connection; only the gateway needs AUTH."""
        import aiosmtplib

        async def send_one(raw: bytes) -> None:
            client = aiosmtplib.SMTP(hostname=host, port=p, start_tls=True,
                                     tls_context=ssl.create_default_context(cafile=cafile))
            await client.connect()
            try:
                if login:
                    await client.login(dpi.username, dpi.password)
                _, reply = await client.sendmail("dpi@hug.localhost", [rcpt], raw)
            finally:
                await client.quit()
            assert "2.0.0" in reply or reply.startswith("OK"), reply
        return send_one

    base_seconds = await _send_all(messages, args.concurrency, sender("127.0.0.1", port, login=False))
    baseline.stop()

    running = await start(gateway, ("smtp", "worker"))
    try:
        assert running.smtp_address is not None
        began = time.perf_counter()
        intake_seconds = await _send_all(messages, args.concurrency, sender(*running.smtp_address, login=True))
        while True:
            with gateway.db.transaction() as session:
                from sqlalchemy import func, select

                done = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == "deposited"))
            if done == args.messages:
                break
            await asyncio.sleep(0.05)
        e2e_seconds = time.perf_counter() - began
    finally:
        await running.stop()
        gateway.close()

    n = args.messages
    backend = "postgresql" if args.database_url else "sqlite"
    print(f"messages={n} size={args.size}B concurrency={args.concurrency} database={backend}")
    print(f"baseline (aiosmtpd, TLS, 250 at once): {n / base_seconds:8.1f} msg/s   1.00x")
    print(f"gateway intake (until 250):             {n / intake_seconds:8.1f} msg/s   {intake_seconds / base_seconds:.2f}x the baseline's time")
    print(f"gateway end-to-end (until deposited):   {n / e2e_seconds:8.1f} msg/s   {e2e_seconds / base_seconds:.2f}x the baseline's time")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--size", type=int, default=100_000, help="attachment bytes")
    parser.add_argument("--database-url", default="", help="PostgreSQL URL; default SQLite in a temp dir")
    asyncio.run(main(parser.parse_args()))
