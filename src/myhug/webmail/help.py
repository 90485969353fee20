"""The "Aide" page: the physicians' help, the same text as docs/aide-medecins.md (one file, two readers).

Rendered once from Markdown (the `markdown` library), open without a login:
help is needed most when logging in fails.
"""

from __future__ import annotations

import functools
from pathlib import Path

import markdown
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from myhug.webmail.base import COOKIE_NAME, WebmailBase

HELP = Path(__file__).parent / "help" / "aide-medecins.md"


@functools.cache
def help_html() -> Markup:
    """The help page's body, from the Markdown source (its first heading is the page's title)."""
    html = markdown.markdown(HELP.read_text(encoding="utf-8"), output_format="html")
    return Markup(html)  # noqa: S704  (our own text, from the package, not user input)


class HelpPage(WebmailBase):
    """The help page."""

    async def help(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        visit = await run_in_threadpool(self._load, request.cookies.get(COOKIE_NAME))
        if visit is not None:
            request.state.visit = visit  # the menu, for a physician who is logged in
        physician = visit.physician if visit is not None else None
        csrf = visit.web_session.csrf_token if visit is not None else None
        return self.render(request, "aide.html", body=help_html(), physician=physician, csrf=csrf)
