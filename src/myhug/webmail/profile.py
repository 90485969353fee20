"""Mon profil: notification mode, specialties, what the lists show, the landing page."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from myhug.directory.models import Physician
from myhug.directory.profile import (
    DOCUMENT_SHOWS,
    LANDING_PAGES,
    PATIENT_SHOWS,
    Preferences,
    ProfileError,
    update_profile,
)
from myhug.directory.specialties import specialty_groups
from myhug.mailbox.notify import skip_waiting
from myhug.webmail.base import WebmailBase
from myhug.websecurity.forms import checked_form, client_ip


class ProfilePages(WebmailBase):
    """The profile page."""

    async def profile(self, request: Request) -> Response:
        web_session, physician = await self.current(request, own_only=True)
        error, saved = None, False
        if request.method == "POST":
            form = await checked_form(request, web_session.csrf_token)
            values: dict[str, Any] = {k: v for k, v in form.items() if k not in ("specialties", "document_types", "csrf")}
            values["specialties"] = form.getlist("specialties")
            values["document_types"] = form.getlist("document_types")
            actor = f"web:{client_ip(request)}"

            def save() -> Physician:
                with self.db.transaction() as session:
                    who = session.get(Physician, physician.id)
                    assert who is not None
                    was_off = who.notification_mode == "none"
                    update_profile(session, who, values, actor)
                    if was_off and who.notification_mode != "none":
                        skip_waiting(session, who.id)
                    session.flush()
                    _ = who.specialties
                    session.expunge(who)
                    return who

            try:
                physician = await run_in_threadpool(save)
                saved = True
            except ProfileError as exc:
                error = str(exc)
        return self.render(request, "profile.html", 400 if error else 200, physician=physician,
                           csrf=web_session.csrf_token, prefs=Preferences.of(physician), error=error, saved=saved,
                           specialty_groups=specialty_groups(), landing_pages=LANDING_PAGES,
                           document_shows=DOCUMENT_SHOWS, patient_shows=PATIENT_SHOWS,
                           selected={s.code for s in physician.specialties})
