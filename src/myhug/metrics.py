"""`/metrics`: the in-process instruments plus what the database knows (queue, receipts, trail).

Deliveries by state and route, the queue's shape by age as Postfix's
`qshape` shows it, receipts by state and the trail's length are read from the
database at each scrape, so every node of a deployment reports the same,
whichever process answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from myhug import instruments  # noqa: F401  (registers the process's own instruments)
from myhug.audit.models import AuditHead
from myhug.db.base import utcnow
from myhug.db.session import Database
from myhug.delivery.models import Delivery, Receipt
from myhug.delivery.states import DeliveryState

# Postfix qshape's buckets: minutes in the queue, each twice the last.
AGE_BUCKETS: tuple[tuple[float, str], ...] = (
    (5, "0-5m"), (10, "5-10m"), (20, "10-20m"), (40, "20-40m"), (80, "40-80m"), (160, "80-160m"),
    (320, "160-320m"), (640, "320-640m"), (float("inf"), "640m+"),
)
# Still the gateway's to deliver: waiting for a worker, deferred, or held.
IN_QUEUE = (DeliveryState.QUEUED, DeliveryState.DEFERRED, DeliveryState.HELD)


def age_bucket(minutes: float) -> str:
    """The qshape bucket of a delivery that has been in the queue this many minutes."""
    return next(label for limit, label in AGE_BUCKETS if minutes < limit)


def queue_shape(session: Session, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Deliveries still in the queue, by route then age bucket (every bucket present, zeros included)."""
    now = now or utcnow()
    shape: dict[str, dict[str, int]] = {}
    for route, created_at in session.execute(
        select(Delivery.route, Delivery.created_at).where(Delivery.state.in_(IN_QUEUE))
    ):
        row = shape.setdefault(route, {label: 0 for _, label in AGE_BUCKETS})
        row[age_bucket((now - created_at).total_seconds() / 60)] += 1
    return shape


class DatabaseCollector(Collector):
    """Reads the gauges from the database at each scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self.db.reading() as session:
            by_state = session.execute(
                select(Delivery.state, Delivery.route, func.count()).group_by(Delivery.state, Delivery.route)).all()
            shape = queue_shape(session)
            receipts = dict(session.execute(select(Receipt.state, func.count()).group_by(Receipt.state)).all())
            head = session.get(AuditHead, 1)
        deliveries = GaugeMetricFamily("myhug_deliveries", "Deliveries by state and route.", labels=["state", "route"])
        for state, route, count in by_state:
            deliveries.add_metric([state, route], count)
        yield deliveries
        depth = GaugeMetricFamily("myhug_queue_depth", "Deliveries still in the queue by route and age "
                                  "(Postfix qshape buckets).", labels=["route", "age"])
        for route, buckets in shape.items():
            for label, count in buckets.items():
                depth.add_metric([route, label], count)
        yield depth
        receipt_family = GaugeMetricFamily("myhug_receipts", "Receipts to the DPI by state.", labels=["state"])
        for state in ("pending", "sent", "failed"):
            receipt_family.add_metric([state], receipts.get(state, 0))
        yield receipt_family
        audit = CounterMetricFamily("myhug_audit_events", "Audit events recorded (the chain's last sequence).")
        audit.add_metric([], head.seq if head else 0)
        yield audit



# Set by `myhug serve` when it starts child processes (before prometheus-client is imported anywhere):
# each process then counts in its own files there, and the exposition sums them.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition(db: Database) -> bytes:
    """The Prometheus text format: the instruments, process metrics and the database's gauges.

    In a `myhug serve` with child processes, the instruments are summed over
    every process, living or dead (a counter never goes back), and the
    process metrics are this process's. Otherwise they are this process's own.
    """
    database = CollectorRegistry()
    database.register(DatabaseCollector(db))
    if os.environ.get(MULTIPROCESS_ENV):
        instruments = CollectorRegistry()
        MultiProcessCollector(instruments)  # type: ignore[no-untyped-call]
        ProcessCollector(registry=instruments)
        return generate_latest(instruments) + generate_latest(database)
    return generate_latest(REGISTRY) + generate_latest(database)
