"""The one web application: health and metrics now; the DPI API and the webmail mount here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from myhug.gateway.models import DELIVERY_STATES, Delivery

if TYPE_CHECKING:
    from myhug.runtime import Gateway


def create_app(gateway: Gateway) -> Starlette:
    """Build the ASGI app for one gateway (explicit wiring, nothing built at import)."""

    def ping() -> None:
        with gateway.db.transaction() as session:
            session.execute(text("SELECT 1"))

    def delivery_counts() -> dict[str, int]:
        with gateway.db.transaction() as session:
            return dict(session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all())  # type: ignore[arg-type]

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(ping)
        except Exception:
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        counts = await run_in_threadpool(delivery_counts)
        lines = [
            "# HELP myhug_deliveries Deliveries by state.",
            "# TYPE myhug_deliveries gauge",
            *(f'myhug_deliveries{{state="{state}"}} {counts.get(state, 0)}' for state in DELIVERY_STATES),
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])
