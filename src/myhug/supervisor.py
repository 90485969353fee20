"""The process supervisor: runs the roles of `myhug serve` (smtp, web, worker) and stops them cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Iterable

import uvicorn

from myhug.audit.atna import AuditFeed
from myhug.components import Components
from myhug.config.settings import parse_hostport
from myhug.crypto.openpgp import stop_agent
from myhug.gateway.inbound import InboundReceiptsHandler, ReceiptIntake
from myhug.gateway.receipts import ReceiptSender
from myhug.gateway.server import (
    ConnectionLimiter,
    DpiAuthenticator,
    SubmissionHandler,
    SubmissionSMTP,
    server_tls_context,
    smtp_factory,
)
from myhug.gateway.worker import DeliveryWorker
from myhug.mailbox.notify import Notifier
from myhug.mailbox.retention import RetentionSweeper
from myhug.web import create_app
from myhug.workerpool import WorkerPool

log = logging.getLogger(__name__)

ROLES = ("smtp", "web", "worker")
STOP_TIMEOUT = 20.0


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
                on_accepted: Callable[[], None] | None = None) -> Running:
    """Start the requested roles on the running loop and return at once.

    `on_accepted` is called for each accepted submission when no worker runs in
    this process (the worker pool's wake-up); an in-process worker is woken directly.
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

    if "smtp" in roles:
        worker = running.worker
        handler = SubmissionHandler(gateway.db, gateway.sealer, settings,
                                    on_accepted=worker.wake if worker else on_accepted)
        host, port = parse_hostport(settings.smtp.listen)
        server = await loop.create_server(smtp_factory(handler, settings, DpiAuthenticator(gateway.db)), host, port)
        running.servers.append(server)
        running.smtp_address = server.sockets[0].getsockname()[:2]
        log.info("SMTP submission listening on %s:%s", *running.smtp_address)
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


async def serve_forever(gateway: Components, roles: Iterable[str] = ROLES, pool: WorkerPool | None = None) -> None:
    """`myhug serve`: run until SIGINT or SIGTERM, then stop cleanly (leases released).

    With a `pool`, the delivery work runs in its child processes and this one
    keeps the other roles. A worker woken by SIGUSR1 looks at the queue at once.
    """
    if pool is not None:
        # Children inherit the signal mask: with SIGUSR1 blocked, a wake-up that reaches a child before it
        # has its handler waits instead of killing it (SIGUSR1's default action).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        await pool.start()
    running = await start(gateway, roles, on_accepted=pool.wake if pool is not None else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if running.worker is not None:
        loop.add_signal_handler(signal.SIGUSR1, running.worker.wake)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    await stop.wait()
    log.info("stopping")
    if pool is not None:
        await pool.stop()
    await running.stop()
    # The gateway's gpg-agent would outlive `myhug serve`; it belongs to this process's work.
    await asyncio.to_thread(stop_agent, gateway.settings.gnupg_home)
