"""Server-rendered pages (Jinja2): each application's own templates over the shared layout."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

SHARED = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
DATE_FORMAT = "%d.%m.%Y %H:%M"
SWISS_TIME = ZoneInfo("Europe/Zurich")  # what the physicians' clocks say, whatever the server's zone
# Who helps a physician or a secretary who is stuck; every refusal page names it.
SUPPORT = {"name": "Service de cybersanté & télémédecine des HUG", "phone": "+41 22 372 62 01",
           "phone_uri": "tel:+41223726201", "email": "myhug@hcuge.ch"}
# The same contact in one sentence, for the messages a page shows in a line (lockouts, caps, suspension).
SUPPORT_SENTENCE = (f"Besoin d’aide\u00a0? {SUPPORT['name']}, {SUPPORT['phone']} (jours ouvrables), "
                    f"{SUPPORT['email']}.")


def _date(moment: datetime | None) -> str:
    return moment.astimezone(SWISS_TIME).strftime(DATE_FORMAT) if moment else ""


def _time(moment: datetime | None) -> str:
    return moment.astimezone(SWISS_TIME).strftime("%H:%M") if moment else ""


def swiss_date(iso: str | None) -> str:
    """An ISO date (a birth date as the DPI sends it) as the Swiss write it: 1948-03-02 -> 02.03.1948."""
    if not iso:
        return ""
    try:
        return date.fromisoformat(iso).strftime("%d.%m.%Y")
    except ValueError:
        return iso


def readable_size(octets: int) -> str:
    """A file size in French usage: 0,6 Ko; 20,0 Mo (decimal comma, one decimal)."""
    value, unit = octets / 1024, "Ko"
    if value >= 1024:
        value, unit = value / 1024, "Mo"
    return f"{value:.1f} {unit}".replace(".", ",")


class Pages:
    """Renders an application's templates (from `directory`, then the shared `base.html`/`error.html`)."""

    def __init__(self, directory: Path, **globals_: Any) -> None:
        env = Environment(loader=ChoiceLoader([FileSystemLoader(directory), FileSystemLoader(SHARED)]),
                          autoescape=select_autoescape(("html",)))
        env.filters["date"] = _date
        env.filters["time"] = _time
        env.globals["SUPPORT"] = SUPPORT
        env.filters["swiss_date"] = swiss_date
        env.filters["size"] = readable_size
        env.globals.update(globals_)
        self.templates = Jinja2Templates(env=env)

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)
