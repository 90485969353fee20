"""The one web server: webmail, health and metrics (and the DPI API, with its issue)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from myhug.api.routes import ApiError, DpiApi, error_response
from myhug.audit.balp import AuditSource
from myhug.components import Components
from myhug.metrics import exposition
from myhug.staffdesk.app import StaffDesk
from myhug.webmail.app import Webmail
from myhug.websecurity.forms import Redirect, security_headers
from myhug.websecurity.pages import STATIC

log = logging.getLogger(__name__)

ERROR_TITLES = {400: "Requête invalide", 403: "Accès refusé", 404: "Page introuvable", 405: "Méthode non autorisée"}


def create_app(parts: Components) -> Starlette:
    """Build the ASGI app: each handler gets only the parts it uses (nothing is built at import)."""
    sms = parts.sms()
    webmail = Webmail(parts.db, parts.sealer, parts.settings, sms)
    api = DpiApi(parts.db, parts.sealer, parts.settings.mail.domain, parts.agents(parts.queue()),
                 AuditSource.of(parts.settings))
    desk = StaffDesk(parts.db, parts.sealer, parts.settings, sms)

    def ping() -> None:
        with parts.db.reading() as session:
            session.execute(text("SELECT 1"))

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(ping)
        except Exception:  # noqa: BLE001  (any failure to reach the database means "unavailable")
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(exposition, parts.db)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_redirect(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Redirect)
        return RedirectResponse(exc.url, status_code=303)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "invalid")
            response = error_response(ApiError(exc.status_code, code, HTTPStatus(exc.status_code).phrase))
        else:
            # Our own details are French sentences; Starlette's defaults ("Not Found") are replaced.
            default = exc.detail == HTTPStatus(exc.status_code).phrase
            message = "La page demandée n’existe pas." if default or not exc.detail else str(exc.detail)
            response = webmail.render(request, "error.html", exc.status_code,
                                      title=ERROR_TITLES.get(exc.status_code, "Erreur"), message=message)
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    async def on_error(request: Request, exc: Exception) -> Response:
        # Never a stack trace on a page: the details go to the log only.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        if request.url.path.startswith("/api/"):
            return error_response(ApiError(500, "exception", "internal error"))
        return webmail.render(request, "error.html", 500, title="Erreur interne",
                              message="Une erreur inattendue s’est produite. Réessayez plus tard.")

    async def headers(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        security_headers(response)
        return response

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("web application started")
        yield
        # Connections are handed back now, not when the process's database object is disposed.
        await run_in_threadpool(parts.db.dispose)
        log.info("web application stopped")

    app = Starlette(
        lifespan=lifespan,
        routes=[Route("/healthz", healthz), Route("/metrics", metrics), *api.routes(), *desk.routes(), *webmail.routes(),
                Mount("/static", StaticFiles(directory=str(STATIC)), name="static")],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=headers)],
        exception_handlers={ApiError: on_api_error, Redirect: on_redirect, HTTPException: on_http_error,
                            Exception: on_error},
    )

    def trusted_origins() -> tuple[str, ...]:
        """The origins a form may be posted from besides the Host's (read at each request: settings may change)."""
        web = parts.settings.web
        urls = [web.public_url, *web.allowed_origins]
        return tuple(f"{u.scheme}://{u.netloc}".lower() for u in map(urlsplit, urls) if u.scheme and u.netloc)

    app.state.trusted_origins = trusted_origins
    return app
