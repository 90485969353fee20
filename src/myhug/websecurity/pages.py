"""Server-rendered pages (Jinja2): each application's own templates over the shared layout."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

SHARED = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
DATE_FORMAT = "%d.%m.%Y %H:%M"


def _date(moment: datetime | None) -> str:
    return moment.astimezone().strftime(DATE_FORMAT) if moment else ""


class Pages:
    """Renders an application's templates (from `directory`, then the shared `base.html`/`error.html`)."""

    def __init__(self, directory: Path, **globals_: Any) -> None:
        env = Environment(loader=ChoiceLoader([FileSystemLoader(directory), FileSystemLoader(SHARED)]),
                          autoescape=select_autoescape(("html",)))
        env.filters["date"] = _date
        env.globals.update(globals_)
        self.templates = Jinja2Templates(env=env)

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)
