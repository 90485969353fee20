"""The patients the physician has documents for."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from myhug.directory.profile import PATIENT_SHOWS, Preferences
from myhug.mailbox.reading import list_patients
from myhug.webmail.base import WebmailBase


class PatientPages(WebmailBase):
    """The patients page."""

    async def patients(self, request: Request) -> Response:
        web_session, physician = await self.current(request)
        prefs = Preferences.of(physician)
        query = request.query_params.get("q", "").strip()[:100]

        def load() -> list[Any]:
            with self.db.reading() as session:
                return list_patients(session, self.sealer, physician.id, prefs.patients_show, prefs.patients_days,
                                     query)

        patients = await run_in_threadpool(load)
        return self.render(request, "patients.html", physician=physician, csrf=web_session.csrf_token,
                           patients=patients, prefs=prefs, shows=PATIENT_SHOWS, query=query)
