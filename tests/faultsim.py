"""Fault injection on the real pipeline: the database fails at each commit and flush point in turn.

In the manner of FoundationDB's simulation and Jepsen's checkers: the real
code runs (SMTP intake handler, claim, HIN and hosted routes, outcomes, the
receipts outbox, the DSN/MDN intake, the notifier, retention) against a real
database, while an `Injector` listening on the engine makes one injection
point fail, and the outside world (the HIN relay, the DPI's mail server)
answers in an order chosen by the scenario. Afterwards `check_invariants`
reads the database and what the outside world received.

An injection point is a kind of database event (`flush`, `commit`, or
`committed`: the commit succeeded but the caller is told it failed) at a
site: the innermost frame of the gateway's code outside `myhug.db`, or the
group commit's thread. A fault mode says what happens at the point's first
hit: `error` (one failure), `transient` (one error that a retry cures),
`outage` (every database event fails for a while) or `kill` (the process
dies there: from then on nothing it does reaches the database or the
network, and a new process takes over once its leases have run out).

Only the database and the world outside are simulated; time passes between
rounds by making deferred work due and running leases out (nothing is in a
worker's hands between rounds).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import sqlite3
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import create_engine, event, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from myhug.audit.models import AuditEvent
from myhug.audit.trail import verify
from myhug.blobs.store import Sealer
from myhug.config.settings import Settings
from myhug.crypto.dkim import DkimSigner
from myhug.crypto.openpgp import OpenPgp
from myhug.db.base import utcnow
from myhug.db.session import Database
from myhug.delivery.models import Delivery, Receipt
from myhug.delivery.queue import DeliveryQueue
from myhug.delivery.receipts import ReceiptSender, receipts_outstanding
from myhug.delivery.worker import DeliveryWorker
from myhug.errors import TemporaryFailure
from myhug.gateway.inbound import InboundReceiptsHandler, ReceiptIntake
from myhug.gateway.server import SubmissionHandler
from myhug.hin.route import HinRouteAgent
from myhug.mail.mime import SpooledMessage
from myhug.mailbox.deposit import HostedMailboxAgent
from myhug.mailbox.models import MailboxItem
from myhug.mailbox.notify import Notifier
from myhug.mailbox.retention import RetentionSweeper
from tests.helpers import dsn_report, mdn_report

SRC = os.sep + "myhug" + os.sep
DB_LAYER = SRC + "db" + os.sep
KINDS = ("flush", "commit", "committed")
MODES = ("error", "transient", "outage", "kill")
OUTAGE_HITS = 12  # database events that fail in an outage, from its first
FINAL_HIN = {"delivered", "read"}
FINAL_HOSTED = {"deposited", "expired"}


class Killed(Exception):
    """The simulated process died at an injection point; nothing it does afterwards takes effect."""


def _site() -> str:
    """The injection point's site: the innermost gateway frame outside `myhug.db`, or the thread's name."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if SRC in name and DB_LAYER not in name:
            return f"{name.rsplit(SRC, 1)[1]}:{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return f"thread:{threading.current_thread().name.split('_')[0]}"


@dataclass(frozen=True)
class Fault:
    kind: str
    site: str
    mode: str

    def __str__(self) -> str:
        return f"{self.mode} at {self.kind}@{self.site}"


@dataclass
class Injector:
    """Listens on one process's engine and sessions; records the points it passes, fails the chosen one."""

    fault: Fault | None = None
    seen: list[tuple[str, str]] = field(default_factory=list)
    fired: bool = False
    outage_left: int = 0
    dead: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, db: Database) -> None:
        event.listen(db.engine, "commit", lambda conn: self._hit("commit"))
        event.listen(db.engine, "before_cursor_execute", self._statement)
        event.listen(db._sessions, "before_flush", lambda session, context, instances: self._hit("flush"))
        event.listen(db._sessions, "after_commit", lambda session: self._hit("committed"))

    def _statement(self, *args: Any) -> None:
        if self.dead:
            raise Killed("the process is dead")

    def _hit(self, kind: str) -> None:
        site = _site()
        with self.lock:
            if self.dead:
                raise Killed("the process is dead")
            self.seen.append((kind, site))
            if self.outage_left > 0 and kind != "committed":
                self.outage_left -= 1
                raise _db_error("disk I/O error (injected outage)")
            fault = self.fault
            if fault is None or self.fired or (kind, site) != (fault.kind, fault.site):
                return
            self.fired = True
            if fault.mode == "kill":
                self.dead = True
                raise Killed(f"killed at {kind}@{site}")
            if fault.mode == "outage":
                self.outage_left = OUTAGE_HITS - 1
            raise _db_error("database is locked" if fault.mode == "transient" else "disk I/O error (injected)")


def _db_error(message: str) -> OperationalError:
    return OperationalError("injected", {}, Exception(message))


# --- the world outside ------------------------------------------------------------------------------

def _raw(message: Any) -> bytes:
    if isinstance(message, SpooledMessage):
        return b"".join(message.chunks())
    return message if isinstance(message, bytes) else bytes(message)


def _headers(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=email.policy.compat32)


@dataclass
class World:
    """The HIN relay (with the physician reading and reporting), the DPI's mail server and the physicians' mail.

    `order` is how the HIN side answers: `after` (DSN once the relay's 250 is
    back), `dsn-early` (the DSN before the relay's 250), `mdn-first` (an MDN,
    then the DSN) or `lost-250` (the relay keeps the first copy but its 250 is
    lost with the connection).
    """

    order: str
    hin_received: list[tuple[str, str]] = field(default_factory=list)  # (envid, Message-ID) of each copy
    reports: list[bytes] = field(default_factory=list)  # DSNs and MDNs the relay still has to hand over
    receipts: list[tuple[str, int, str]] = field(default_factory=list)  # (document id, sequence, event)
    notifications: int = 0
    dead: Injector | None = None  # the process whose sending counts; a dead one sends nothing

    def _alive(self) -> None:
        if self.dead is not None and self.dead.dead:
            raise Killed("the process is dead")

    async def hin_send(self, message: Any, *, sender: str, recipients: list[str], dsn: Any = None) -> str:
        self._alive()
        raw = _raw(message)
        message_id = str(_headers(raw)["Message-ID"])
        envid = dsn.envid if dsn is not None else ""
        first = all(e != envid for e, _ in self.hin_received)
        self.hin_received.append((envid, message_id))
        reports = [dsn_report(envid, recipients[0])]
        if self.order == "mdn-first":
            reports.insert(0, mdn_report(message_id, recipients[0], recipients[0]))
        if self.order == "dsn-early":
            self.reports[:0] = reports  # handed over before the 250 below reaches the gateway
            await self.hand_over_reports()
        else:
            self.reports.extend(reports)
        if self.order == "lost-250" and first:
            raise TemporaryFailure("relay connection lost after DATA (the 250 never arrived)")
        return "250 2.0.0 Ok: queued"

    async def dpi_send(self, message: Any, *, sender: str, recipients: list[str], dsn: Any = None) -> str:
        self._alive()
        head = _headers(_raw(message))
        self.receipts.append((str(head["X-MyHUG-Document-Id"]), int(str(head["X-MyHUG-Sequence"])),
                              str(head["X-MyHUG-Event"])))
        return "250 2.0.0 Ok"

    async def mail_send(self, message: Any, *, sender: str, recipients: list[str], dsn: Any = None) -> str:
        self._alive()
        self.notifications += 1
        return "250 2.0.0 Ok"

    inbound: InboundReceiptsHandler | None = None

    async def hand_over_reports(self) -> None:
        """The relay hands its reports to the gateway's inbound listener; what is not taken with 250 stays."""
        if self.inbound is None:
            return
        kept = []
        for raw in self.reports:
            try:
                reply = await self.inbound.handle_DATA(None, None, SimpleNamespace(original_content=raw))  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001  (aiosmtpd answers 451 to a handler's fault)
                reply = "451 4.3.0"
            if not reply.startswith("250"):
                assert reply.startswith("4"), reply  # never refused for good
                kept.append(raw)
        self.reports = kept


class SenderOf:
    """A `MailSender` that is one of the world's methods."""

    def __init__(self, send: Any) -> None:
        self.send = send


# --- one process of the gateway ---------------------------------------------------------------------

class Process:
    """The gateway's parts in one (simulated) process, each outbound sender playing the world."""

    def __init__(self, settings: Settings, sealer: Sealer, world: World, injector: Injector, n: int) -> None:
        self.db = Database(settings.database_url)
        injector.attach(self.db)
        self.injector = injector
        self.owner = f"process-{n}"
        self.queue = DeliveryQueue(self.db, settings.queue, self.owner)
        signer = DkimSigner(settings.dkim_key_file, settings.mail.domain, settings.mail.dkim_selector)
        hosted = HostedMailboxAgent(self.queue)
        hin = HinRouteAgent(self.queue, sealer, settings, OpenPgp(settings.gnupg_home), signer, hosted,
                            SenderOf(world.hin_send))  # type: ignore[arg-type]
        self.worker = DeliveryWorker(self.queue, {hosted.route: hosted, hin.route: hin})  # type: ignore[dict-item]
        self.intake = SubmissionHandler(self.db, sealer, settings)
        self.receipts = ReceiptSender(self.db, settings, SenderOf(world.dpi_send), signer.sign,  # type: ignore[arg-type]
                                      owner=self.owner)
        self.notifier = Notifier(self.db, settings, SenderOf(world.mail_send), signer.sign,  # type: ignore[arg-type]
                                 owner=self.owner)
        self.retention = RetentionSweeper(self.db, settings.mailbox.retention_days)
        self.inbound = InboundReceiptsHandler(ReceiptIntake(self.db, settings, dkim_dns=lambda n, timeout=5: None),
                                              settings)
        world.inbound, world.dead = self.inbound, injector

    def close(self) -> None:
        for commits in (self.intake.commits, self.queue.outcomes):
            commits.close()
        self.db.dispose()


# --- the scenario -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Submission:
    document_id: str
    recipient: str
    route: str
    raw: bytes


@dataclass
class Run:
    fault: Fault | None
    order: str
    client_id: int
    acknowledged: dict[str, str] = field(default_factory=dict)  # document id -> submission id of its 250
    rounds: int = 0
    restarts: int = 0
    seen: list[tuple[str, str]] = field(default_factory=list)
    fired: bool = False
    world: World | None = None


MAX_ROUNDS = 25


async def run_scenario(settings: Settings, sealer: Sealer, client_id: int, submissions: list[Submission],
                       fault: Fault | None, order: str) -> Run:
    """Submit every document (retrying on 4xx as a DPI does) and drive the pipeline until all is settled."""
    world = World(order)
    run = Run(fault, order, client_id, world=world)
    injector = Injector(fault)
    process = Process(settings, sealer, world, injector, 0)
    try:
        for run.rounds in range(1, MAX_ROUNDS + 1):
            if not injector.dead:
                await _round(process, world, run, submissions)
            if injector.dead:  # the process died: a new one takes over once its leases have run out
                process.close()
                _run_out_leases(settings)
                run.seen += injector.seen
                run.fired = True
                injector = Injector(None)
                run.restarts += 1
                process = Process(settings, sealer, world, injector, run.restarts)
                continue
            _time_passes(settings)
            if _settled(settings, world, run, submissions):
                break
        run.fired = run.fired or injector.fired
        run.seen += injector.seen
    finally:
        process.close()
    return run


async def _round(process: Process, world: World, run: Run, submissions: list[Submission]) -> None:
    for submission in submissions:
        if submission.document_id in run.acknowledged:
            continue
        envelope = SimpleNamespace(original_content=submission.raw, content=submission.raw,
                                   rcpt_tos=[submission.recipient], mail_from="dpi@hug.localhost")
        session = SimpleNamespace(auth_data=run.client_id, peer=("127.0.0.1", 40000))
        try:
            reply = await process.intake.handle_DATA(None, session, envelope)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001  (aiosmtpd answers 451 to a handler's fault)
            reply = "451 4.3.0"
        if reply.startswith("250"):
            run.acknowledged[submission.document_id] = reply.rsplit(" ", 1)[1]
        else:
            assert reply.startswith("4"), f"{submission.document_id}: {reply}"  # a fault is a 4xx, never a 5xx
    for step in (process.worker.run_once, world.hand_over_reports, process.worker.run_once,
                 world.hand_over_reports, process.retention.run_once, process.receipts.run_once,
                 process.notifier.run_once):
        if process.injector.dead:
            return
        with contextlib.suppress(Exception):  # a background loop logs and goes on (BackgroundLoop.run)
            await step()


def _admin(settings: Settings) -> Database:
    return Database(settings.database_url)


def _run_out_leases(settings: Settings) -> None:
    """Time enough passes for every lease to run out (the dead process's among them)."""
    db = _admin(settings)
    try:
        past = utcnow() - timedelta(seconds=1)
        with db.transaction() as session:
            for model in (Delivery, Receipt, MailboxItem):
                session.execute(update(model).where(model.lease_until.is_not(None)).values(lease_until=past))
    finally:
        db.dispose()


def _time_passes(settings: Settings) -> None:
    """Between rounds: backoffs end, leases run out, and hosted documents grow old enough to reach retention."""
    _run_out_leases(settings)
    db = _admin(settings)
    try:
        now = utcnow()
        with db.transaction() as session:
            session.execute(update(Delivery).where(Delivery.state.in_(("queued", "deferred")))
                            .values(next_attempt_at=now))
            session.execute(update(Receipt).where(Receipt.state == "pending").values(next_attempt_at=now))
            session.execute(update(MailboxItem).where(MailboxItem.state == "available")
                            .values(next_attempt_at=now,
                                    deposited_at=now - timedelta(days=settings.mailbox.retention_days + 1)))
    finally:
        db.dispose()


def _settled(settings: Settings, world: World, run: Run, submissions: list[Submission]) -> bool:
    if len(run.acknowledged) < len(submissions) or world.reports:
        return False
    db = _admin(settings)
    try:
        with db.reading() as session:
            states = {d.state for d in session.scalars(select(Delivery))}
            return states <= FINAL_HIN | FINAL_HOSTED | {"failed", "expired", "retracted"} and \
                not receipts_outstanding(session)
    finally:
        db.dispose()


# --- the invariants ---------------------------------------------------------------------------------

def check_invariants(settings: Settings, run: Run, submissions: list[Submission]) -> list[str]:
    """What must hold after any run; returns the violations (empty when all hold)."""
    assert run.world is not None
    world = run.world
    problems: list[str] = []
    expected = {s.document_id: s.route for s in submissions}
    if set(run.acknowledged) != set(expected):
        problems.append(f"not every document acknowledged within {MAX_ROUNDS} rounds: {sorted(run.acknowledged)}")
    db = _admin(settings)
    try:
        with db.reading() as session:
            deliveries = list(session.scalars(select(Delivery)))
            events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
            items = list(session.scalars(select(MailboxItem)))
            receipts = list(session.scalars(select(Receipt)))
            verification = verify(session)
            now = utcnow()
    finally:
        db.dispose()
    by_document = {d.document_id: d for d in deliveries}
    for document_id, route in expected.items():
        delivery = by_document.get(document_id)
        if document_id in run.acknowledged and delivery is None:
            problems.append(f"{document_id}: acknowledged (250) but no delivery: lost")
            continue
        if delivery is None:
            continue
        if delivery.submission_id != run.acknowledged.get(document_id):
            problems.append(f"{document_id}: the 250 named {run.acknowledged.get(document_id)}, "
                            f"the delivery belongs to {delivery.submission_id}")
        final = FINAL_HIN if route == "hin" else FINAL_HOSTED
        if delivery.state not in final:
            problems.append(f"{document_id}: ended {delivery.state}, not one of {sorted(final)}")
        if delivery.lease_owner is not None:
            problems.append(f"{document_id}: {delivery.state} but still leased by {delivery.lease_owner}")
    if len(deliveries) != len(by_document):
        problems.append(f"{len(deliveries)} deliveries for {len(by_document)} documents: stored twice")
    deposits: dict[str, int] = defaultdict(int)
    for e in events:
        if e.event == "deposited" and e.delivery_id:
            deposits[e.delivery_id] += 1
    per_delivery_items: dict[str, int] = defaultdict(int)
    for item in items:
        per_delivery_items[item.delivery_id] += 1
    for delivery_id in set(deposits) | set(per_delivery_items):
        if deposits[delivery_id] > 1 or per_delivery_items[delivery_id] > 1:
            problems.append(f"delivery {delivery_id} deposited {deposits[delivery_id]} times, "
                            f"{per_delivery_items[delivery_id]} mailbox items")
    message_ids: dict[str, set[str]] = defaultdict(set)
    for envid, message_id in world.hin_received:
        message_ids[envid].add(message_id)
    for envid, ids in message_ids.items():
        if len(ids) != 1:
            problems.append(f"HIN copies of {envid} carry different Message-IDs: {sorted(ids)}")
    # Receipts: in trail order per document (first arrival of each), and one for each final state.
    first_arrival: dict[str, list[int]] = defaultdict(list)
    got: set[int] = set()
    for document_id, seq, _ in world.receipts:
        if seq not in got:
            got.add(seq)
            first_arrival[document_id].append(seq)
    for document_id, seqs in first_arrival.items():
        if seqs != sorted(seqs):
            problems.append(f"{document_id}: receipts out of trail order: {seqs}")
    for delivery in deliveries:
        final_events = [e for e in events if e.delivery_id == delivery.id and e.event == delivery.state]
        if delivery.state in FINAL_HIN | FINAL_HOSTED and not final_events:
            problems.append(f"{delivery.document_id}: no '{delivery.state}' event in the trail")
        for e in final_events[-1:]:
            if e.seq not in got:
                problems.append(f"{delivery.document_id}: the DPI never heard '{e.event}' (seq {e.seq})")
    if not verification.ok:
        problems.append(f"audit verify failed at {verification.first_bad}: {verification.reason}")
    for receipt in receipts:
        if receipt.state != "sent":
            problems.append(f"receipt {receipt.id} left {receipt.state}")
        if receipt.lease_owner is not None and receipt.lease_until is not None and receipt.lease_until > now:
            problems.append(f"receipt {receipt.id} still leased")
    for item in items:
        if item.lease_owner is not None and item.lease_until is not None and item.lease_until > now:
            problems.append(f"mailbox item {item.id} still leased")
    return problems


# --- databases: one copy of the prepared store per run -----------------------------------------------

class Snapshots:
    """The prepared database, copied afresh for each run (a file copy on SQLite, a template on PostgreSQL)."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.n = 0
        self.made: list[str] = []

    @property
    def sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def fresh(self) -> str:
        """A new database holding what the prepared one holds; returns its URL."""
        self.n += 1
        source = make_url(self.url)
        if self.sqlite:
            target = self.workdir / f"run-{self.n}.db"
            with sqlite3.connect(str(source.database)) as original, sqlite3.connect(target) as copy:
                original.backup(copy)  # what the WAL holds too
            return f"sqlite:///{target}"
        name = f"{source.database}_r{self.n}"
        admin = create_engine(source.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source.database}"'))
        finally:
            admin.dispose()
        self.made.append(name)
        return source.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        target = make_url(url)
        if self.sqlite:
            for suffix in ("", "-wal", "-shm", "-writer", "-writer-gate"):
                Path(f"{target.database}{suffix}").unlink(missing_ok=True)
            return
        admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        finally:
            admin.dispose()
