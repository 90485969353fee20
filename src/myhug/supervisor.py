"""The process supervisor: runs the roles of `myhug serve` (smtp, web, worker) and stops them cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import uvicorn

from myhug.audit.atna import AuditFeed
from myhug.components import Components
from myhug.config.settings import parse_hostport
from myhug.crypto.openpgp import stop_agent
from myhug.delivery.receipts import ReceiptSender
from myhug.delivery.worker import DeliveryWorker
from myhug.gateway.inbound import InboundReceiptsHandler, ReceiptIntake
from myhug.gateway.server import DpiAuthenticator, SubmissionHandler, server_tls_context, smtp_factory
from myhug.gateway.smtp import ConnectionLimiter, SubmissionSMTP
from myhug.mailbox.notify import Notifier
from myhug.mailbox.retention import RetentionSweeper
from myhug.web import create_app
from myhug.workerpool import WorkerPool

log = logging.getLogger(__name__)

ROLES = ("smtp", "web", "worker")
STOP_TIMEOUT = 20.0
INTAKE_ENV = "MYHUG_SMTP_INTAKE_OF"  # set by `myhug serve` in its extra intake processes


@dataclass(frozen=True)
class IntakeShare:
    """What an extra SMTP intake process is told by the `myhug serve` that started it.

    Each intake process has a listening socket of its own on the one
    submission address (SO_REUSEPORT), so the kernel spreads connections over
    them. One socket passed down to all would not: asyncio accepts every
    waiting connection at once, and the first process awake took them all.
    """

    address: str  # the parent's submission host:port, its port as bound (a configured 0 made concrete)
    processes: int  # how many processes accept on it, the parent included: the connection caps' divisor

    def to_env(self) -> str:
        return json.dumps({"address": self.address, "processes": self.processes})

    @classmethod
    def from_env(cls) -> IntakeShare | None:
        """What this process was told, or None when it is not an extra intake process."""
        raw = os.environ.get(INTAKE_ENV)
        if not raw:
            return None
        data = json.loads(raw)
        return cls(str(data["address"]), int(data["processes"]))


def _refuse_if_taken(host: str, port: int) -> None:
    """Fail as a plain bind would if anything listens on host:port already.

    The intake's sockets share their port (SO_REUSEPORT), which would let a second gateway started by
    mistake join silently instead of failing with "address already in use".
    """
    if port == 0:
        return
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    finally:
        probe.close()


class Running:
    """Handles to what `start` launched, so tests and `serve` can stop it cleanly."""

    def __init__(self) -> None:
        self.servers: list[asyncio.base_events.Server] = []
        self.worker: DeliveryWorker | None = None
        self.notifier: Notifier | None = None
        self.receipts: ReceiptSender | None = None
        self.retention: RetentionSweeper | None = None
        self.audit_feeds: list[AuditFeed] = []
        self.inbound_address: tuple[str, int] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.web: uvicorn.Server | None = None
        self.smtp_address: tuple[str, int] | None = None
        self.web_address: tuple[str, int] | None = None

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        if self.worker is not None:
            self.worker.stop()
        for loop in (self.notifier, self.receipts, self.retention, *self.audit_feeds):
            if loop is not None:
                loop.stop()
        if self.web is not None:
            self.web.should_exit = True
        if self.tasks:
            # A clean stop finishes in-flight work; a stuck task must not keep the process alive forever.
            done, pending = await asyncio.wait(self.tasks, timeout=STOP_TIMEOUT)
            for task in pending:
                log.warning("task %s did not stop within %ss; cancelling it", task.get_name(), STOP_TIMEOUT)
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


async def start(gateway: Components, roles: Iterable[str] = ROLES,
                on_accepted: Callable[[], None] | None = None, share: IntakeShare | None = None,
                smtp_processes: int = 1) -> Running:
    """Start the requested roles on the running loop and return at once.

    `on_accepted` is called for each accepted submission when no worker runs in
    this process (the worker pool's wake-up); an in-process worker is woken directly.
    `smtp_processes` is how many processes will accept submissions on this
    one's address; with `share`, this is one of the extra ones (submissions
    only: DSNs and MDNs stay with the parent).
    """
    roles = set(roles)
    unknown = roles - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s): {', '.join(sorted(unknown))}; choose among {', '.join(ROLES)}")
    running = Running()
    loop = asyncio.get_running_loop()
    settings = gateway.settings

    if "worker" in roles:
        queue = gateway.queue()
        running.notifier = gateway.notifier()
        running.worker = DeliveryWorker(queue, gateway.agents(queue, running.notifier))
        running.tasks.append(asyncio.create_task(running.worker.run(), name="delivery-worker"))
        running.tasks.append(asyncio.create_task(running.notifier.run(settings.queue.poll_interval * 5), name="notifier"))
        running.receipts = gateway.receipt_sender()
        running.tasks.append(asyncio.create_task(running.receipts.run(settings.queue.poll_interval), name="receipts"))
        running.retention = gateway.retention()
        running.tasks.append(asyncio.create_task(running.retention.run(3600), name="retention"))
        running.audit_feeds = gateway.audit_feeds()
        for feed in running.audit_feeds:
            running.tasks.append(asyncio.create_task(feed.run(max(settings.queue.poll_interval, 1.0)), name=feed.cursor))

    if "smtp" in roles and "worker" not in roles:
        # A DPI waits on the line for its 250; deliveries can wait a moment for the write lock.
        gateway.db.prioritize_writes()
    if "smtp" in roles:
        worker = running.worker
        handler = SubmissionHandler(gateway.db, gateway.sealer, settings,
                                    on_accepted=worker.wake if worker else on_accepted)
        processes = share.processes if share else smtp_processes
        factory = smtp_factory(handler, settings, DpiAuthenticator(gateway.db), processes)
        host, port = parse_hostport(share.address if share else settings.smtp.listen)
        if processes > 1 and share is None:
            _refuse_if_taken(host, port)
        server = await loop.create_server(factory, host, port, reuse_port=processes > 1)
        running.servers.append(server)
        running.smtp_address = server.sockets[0].getsockname()[:2]
        log.info("SMTP submission listening on %s:%s", *running.smtp_address)
    if "smtp" in roles and share is None:
        host, port = parse_hostport(settings.smtp.inbound_listen)
        inbound = InboundReceiptsHandler(ReceiptIntake(gateway.db, settings), settings)
        tls = server_tls_context(settings)
        # The same connection caps and DATA deadline as the submission port: the peer is outside.
        inbound_limiter = ConnectionLimiter(settings.smtp.max_connections, settings.smtp.max_connections_per_peer)
        server = await loop.create_server(
            lambda: SubmissionSMTP(inbound, hostname=settings.smtp.hostname, tls_context=tls, require_starttls=False,
                                   auth_required=False, data_size_limit=1_000_000, ident="myHUG receipts",
                                   limiter=inbound_limiter, data_timeout=settings.smtp.data_timeout),
            host, port,
        )
        running.servers.append(server)
        running.inbound_address = server.sockets[0].getsockname()[:2]
        log.info("SMTP receipts (DSN/MDN) listening on %s:%s", *running.inbound_address)

    if "web" in roles:
        host, port = parse_hostport(settings.web.listen)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        running.web_address = sock.getsockname()[:2]
        # The TCP peer is the client: X-Forwarded-For and the like are believed only from the reverse
        # proxies the operator names (web.forwarded_allow_ips, empty by default). uvicorn's own default
        # believes 127.0.0.1, which would let any local process pose as a trusted HIN proxy.
        proxies = settings.web.forwarded_allow_ips
        config = uvicorn.Config(create_app(gateway), log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=10, proxy_headers=bool(proxies),
                                forwarded_allow_ips=proxies or [], server_header=False)
        running.web = uvicorn.Server(config)
        running.tasks.append(asyncio.create_task(running.web.serve(sockets=[sock]), name="web"))
        log.info("web listening on http://%s:%s", *running.web_address)
    return running


async def serve_forever(gateway: Components, roles: Iterable[str] = ROLES, pool: WorkerPool | None = None,
                        intake: WorkerPool | None = None, on_accepted: Callable[[], None] | None = None) -> None:
    """`myhug serve`: run until SIGINT or SIGTERM, then stop cleanly (leases released).

    With a `pool`, the delivery work runs in its child processes and this one
    keeps the other roles. A worker woken by SIGUSR1 looks at the queue at once.
    With an `intake` pool (and the smtp role here), its processes accept
    submissions on this one's address too; each SIGUSR1 they send for an accepted
    document wakes a worker. `on_accepted` is the wake-up of a process without
    either (an intake process's signal to its parent).
    """
    roles = list(roles)
    if intake is not None and "smtp" not in roles:
        intake = None
    if pool is not None or intake is not None:
        # Children inherit the signal mask: with SIGUSR1 blocked, a wake-up that reaches a child before it
        # has its handler waits instead of killing it (SIGUSR1's default action).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    if pool is not None:
        await pool.start()
    processes = 1 + (intake.count if intake is not None else 0)
    running = await start(gateway, roles, on_accepted=pool.wake if pool is not None else on_accepted,
                          share=IntakeShare.from_env(), smtp_processes=processes)
    if intake is not None and running.smtp_address is not None:
        host, port = running.smtp_address
        intake.env[INTAKE_ENV] = IntakeShare(f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                                             processes).to_env()
        await intake.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    wake = running.worker.wake if running.worker is not None else (pool.wake if pool is not None else None)
    if wake is not None:
        loop.add_signal_handler(signal.SIGUSR1, wake)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    await stop.wait()
    log.info("stopping")
    if intake is not None:
        await intake.stop()
    if pool is not None:
        await pool.stop()
    await running.stop()
    # The gateway's gpg-agent would outlive `myhug serve`; it belongs to this process's work.
    await asyncio.to_thread(stop_agent, gateway.settings.gnupg_home)
