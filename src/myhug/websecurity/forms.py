"""What every page of the webmail and the staff desk shares: the visitor's address, CSRF-checked forms,
refusals shown on the page, redirects, and the security headers of every response."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from myhug.errors import MyhugError

PRE_COOKIE = "__Host-myhug-pre"  # CSRF token of the login forms, before any session exists


class LoginRefused(MyhugError):
    """A refusal to show on the page, in French."""


class Redirect(Exception):
    """Raised by a handler when the visitor must go elsewhere first (e.g. to log in); answered 303."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def client_ip(request: Request) -> str:
    """The TCP peer (or, behind a reverse proxy named in `web.forwarded_allow_ips`, the client it names)."""
    return request.client.host if request.client else "unknown"


def same_origin(request: Request) -> bool:
    """Origin (or, failing it, Referer) must name this site; a browser always sends one on POST.

    This site is the Host the request came with, or one of the public origins
    the operator named (`web.public_url`, `web.allowed_origins`): a reverse
    proxy such as the HIN access gateway may pass the request on under another
    Host than the one in the physician's address bar.
    """
    host = request.headers.get("host")
    trusted: tuple[str, ...] = getattr(request.app.state, "trusted_origins", lambda: ())()
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value and value != "null":
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https"):
                return False
            return parts.netloc == host or f"{parts.scheme}://{parts.netloc}".lower() in trusted
    # Neither header: not a browser form post (a browser's would carry Origin); the token decides.
    return "origin" not in request.headers


async def checked_form(request: Request, expected_csrf: str | None) -> FormData:
    """The POSTed form, after the CSRF token and the Origin check; 403 otherwise."""
    form = await request.form()
    token = form.get("csrf")
    if (not expected_csrf or not isinstance(token, str) or not secrets.compare_digest(token, expected_csrf)
            or not same_origin(request)):
        raise HTTPException(403, "Jeton de sécurité invalide. Rechargez la page et recommencez.")
    return form


def set_cookie(response: Response, name: str, token: str, max_age: int | None = None) -> None:
    """A `__Host-` cookie: Secure, HttpOnly, SameSite=Strict, path /."""
    response.set_cookie(name, token, secure=True, httponly=True, samesite="strict", path="/", max_age=max_age)


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def security_headers(response: Response) -> None:
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    )
    # Browsers ignore HSTS over plain http, so it costs nothing on a loopback test server.
    response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    response.headers.setdefault("X-Frame-Options", "DENY")  # a file may allow its own document page
    response.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: with no-referrer, browsers send "Origin: null" on form posts.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
