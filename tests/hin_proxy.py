"""A stand-in for the HIN access gateway: a reverse proxy that injects the HIN identity headers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def hin_headers(gln: str, *, login: str = "mdupont", mail: str = "marie.dupont@hin.ch", usertype: str = "Personal",
                given: str = "Marie", surname: str = "Dupont") -> dict[str, str]:
    return {
        "X-HIN-LOGIN-NAME": login, "X-HIN-EAN-NO-MEDICAL": gln, "X-HIN-MAIL": mail,
        "X-HIN-USERTYPE": usertype, "X-HIN-GIVEN-NAME": given, "X-HIN-SURNAME": surname,
    }


@asynccontextmanager
async def hin_proxy(upstream: str, identity: dict[str, str]) -> AsyncIterator[str]:
    """Serve a proxy to `upstream` that adds `identity` to every request; yields its base URL."""
    client = httpx.AsyncClient(base_url=upstream, follow_redirects=False)

    async def forward(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.update(identity)
        upstream_response = await client.request(
            request.method, request.url.path, params=request.query_params, headers=headers, content=await request.body()
        )
        out_headers = [(k, v) for k, v in upstream_response.headers.multi_items() if k.lower() not in HOP_BY_HOP]
        response = Response(upstream_response.content, status_code=upstream_response.status_code)
        response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers]
        response.headers["content-length"] = str(len(upstream_response.content))
        return response

    app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await client.aclose()
