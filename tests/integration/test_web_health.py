"""The web server's liveness and metrics endpoints."""

import httpx

from myhug.supervisor import Running


async def test_healthz_and_metrics(running: Running) -> None:
    assert running.web_address is not None
    base = "http://{}:{}".format(*running.web_address)
    async with httpx.AsyncClient(base_url=base) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert 'myhug_deliveries{state="queued"} 0' in metrics.text
        assert 'myhug_receipts{state="pending"} 0' in metrics.text
        assert "myhug_audit_events 0" in metrics.text
