"""The web server's liveness and metrics endpoints (prometheus-client)."""

from __future__ import annotations

from datetime import timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from myhug.components import Components
from myhug.db.base import utcnow
from myhug.delivery.models import Delivery
from myhug.directory.service import DpiCredentials
from myhug.metrics import age_bucket
from myhug.supervisor import Running
from tests.conftest import Directory
from tests.helpers import web_base
from tests.integration.test_webmail import deposit


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed by prometheus-client's own parser (so the format is valid)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_healthz_and_metrics(running: Running, gateway: Components, dpi: DpiCredentials,
                                   directory: Directory) -> None:
    async with httpx.AsyncClient(base_url=web_base(running)) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        empty = samples((await client.get("/metrics")).text)
        assert empty[("myhug_receipts", (("state", "pending"),))] == 0
        assert empty[("myhug_audit_events_total", ())] == 0
        assert ("process_cpu_seconds_total", ()) in empty  # process metrics come with the library
        before = empty.get(("myhug_submissions_total", (("code", "250"),)), 0)

        doctor = directory.hosted(consents=("P-1001",))
        await deposit(running, gateway, dpi, doctor)
        metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=")
    after = samples(metrics.text)
    assert after[("myhug_submissions_total", (("code", "250"),))] == before + 1
    assert after[("myhug_deliveries", (("route", "hosted"), ("state", "deposited")))] == 1
    assert after[("myhug_delivery_latency_seconds_count", (("route", "hosted"),))] >= 1
    assert after[("myhug_audit_events_total", ())] >= 2


def test_queue_shape_buckets_by_age_as_qshape_does(gateway: Components, dpi: DpiCredentials,
                                                   directory: Directory) -> None:
    from myhug.metrics import queue_shape
    from tests.helpers import accept_directly

    assert [age_bucket(m) for m in (0, 4.9, 5, 12, 700)] == ["0-5m", "0-5m", "5-10m", "10-20m", "640m+"]
    doctor = directory.hosted(consents=("P-1001",))
    accept_directly(gateway, doctor.address)
    with gateway.db.transaction() as session:
        session.execute(update(Delivery).values(created_at=utcnow() - timedelta(minutes=25)))
    with gateway.db.reading() as session:
        shape = queue_shape(session)
    assert shape["hosted"]["20-40m"] == 1 and sum(shape["hosted"].values()) == 1


def test_queue_list_ends_with_the_qshape_summary(gateway: Components, dpi: DpiCredentials,
                                                 directory: Directory) -> None:
    from tests.helpers import accept_directly, myhug

    doctor = directory.hosted(consents=("P-1001",))
    accept_directly(gateway, doctor.address)
    out = myhug(gateway.settings, "queue", "list").stdout
    header, row = out.strip().splitlines()[-2:]
    assert header.split()[:3] == ["T", "0-5m", "5-10m"] and header.split()[-1] == "640m+"
    assert row.split()[:3] == ["hosted", "1", "1"]
