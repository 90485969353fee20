"""A cookie-keeping HTTP client for webmail tests.

httpx's cookie jar, like the standard library's, will not send `Secure`
cookies over plain http, while browsers do on loopback; this client keeps
cookies itself, and sends an Origin header on POST as a browser does.
"""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class WebClient:
    def __init__(self, base_url: str, local_address: str | None = None) -> None:
        self.base_url = base_url
        transport = httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
        self.http = httpx.AsyncClient(base_url=base_url, transport=transport, follow_redirects=False, timeout=30)
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    async def __aenter__(self) -> WebClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.http.aclose()

    def _keep(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            self.set_cookie_headers.append(header)
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel["expires"].startswith("Thu, 01 Jan 1970"):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def _cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    async def get(self, path: str, headers: dict[str, str] | None = None, follow: bool = True) -> httpx.Response:
        response = await self.http.get(path, headers={**self._cookie_header(), **(headers or {})})
        self._keep(response)
        while follow and response.status_code in (302, 303):
            response = await self.http.get(response.headers["location"], headers=self._cookie_header())
            self._keep(response)
        return response

    async def post(self, path: str, data: dict[str, Any], origin: str | None = "same", follow: bool = True,
                   csrf: str | None = None) -> httpx.Response:
        headers = self._cookie_header()
        if origin == "same":
            headers["Origin"] = self.base_url
        elif origin:
            headers["Origin"] = origin
        if csrf is not None:
            data = {"csrf": csrf, **data}
        response = await self.http.post(path, data=data, headers=headers)
        self._keep(response)
        while follow and response.status_code in (302, 303):
            response = await self.http.get(response.headers["location"], headers=self._cookie_header())
            self._keep(response)
        return response

    async def csrf_of(self, path: str) -> str:
        page = await self.get(path)
        match = CSRF.search(page.text)
        assert match, f"no CSRF token on {path}: {page.status_code} {page.text[:200]}"
        return match.group(1)
