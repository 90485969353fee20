"""The documents: the list with its filters, one document, marking it unread, its files."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from myhug.directory.models import Physician
from myhug.directory.profile import DOCUMENT_SHOWS, DOCUMENT_TYPES, Preferences
from myhug.mailbox.archive import ArchiveEntry, archive_entries, available_items, practice_package, zip_stream
from myhug.mailbox.reading import (
    PAGE_SIZE,
    SORTS,
    DocumentFilter,
    DocumentUnavailable,
    document_detail,
    list_documents,
    mark_seen,
    mark_unread,
    open_attachment,
    withdrawn_detail,
)
from myhug.webmail.base import WebmailBase
from myhug.websecurity.forms import checked_form, client_ip
from myhug.xdm.metadata import Origin


class DocumentPages(WebmailBase):
    """The documents family of pages."""

    async def documents(self, request: Request) -> Response:
        web_session, physician = await self.current(request)
        prefs = Preferences.of(physician)
        q = request.query_params
        show = q.get("show") if q.get("show") in DOCUMENT_SHOWS else prefs.documents_show
        try:
            days = max(1, min(3650, int(q.get("days", prefs.documents_days))))
            page = max(1, int(q.get("page", "1")))
        except ValueError:
            raise HTTPException(400, "Paramètre invalide.") from None
        # A `type` in the query, even empty ("Tous les types"), is the physician's choice now; without one,
        # the profile's types apply, and the page says how many documents they hide.
        chosen = "type" in q
        types = tuple(t for t in q.getlist("type") if t in DOCUMENT_TYPES) if chosen \
            else tuple(prefs.document_types)
        sort = q.get("sort") if q.get("sort") in SORTS else "date"
        flt = DocumentFilter(show=show or "all", days=days, types=types, patient_ref=q.get("patient") or None,
                             query=q.get("q", "").strip()[:100], sort=sort or "date",
                             department=q.get("department", "").strip()[:200])
        by_profile = not chosen and bool(types)

        def load() -> tuple[list[Any], int, int]:
            with self.db.reading() as session:
                items, total = list_documents(session, self.sealer, physician.id, flt, page)
                if not by_profile:
                    return items, total, 0
                # What "tout afficher" shows: every document (read or not, any type) of the same search.
                everything = replace(flt, types=(), show="all")
                _, unfiltered = list_documents(session, self.sealer, physician.id, everything, page)
                return items, total, unfiltered - total

        items, total, hidden = await run_in_threadpool(load)
        pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)

        def page_query(number: int) -> str:
            """The same filters on another page: every filter survives paging, the types too."""
            params: list[tuple[str, str | int]] = [("show", flt.show), ("days", flt.days)]
            if chosen:
                params += [("type", t) for t in flt.types] or [("type", "")]
            if flt.patient_ref:
                params.append(("patient", flt.patient_ref))
            if flt.query:
                params.append(("q", flt.query))
            if flt.department:
                params.append(("department", flt.department))
            if flt.sort != "date":
                params.append(("sort", flt.sort))
            return urlencode([*params, ("page", number)])

        if page > pages:  # past the last page (an old link, a typed URL): the last page, not "Page 999 / 10"
            return self.redirect("/documents?" + page_query(pages))
        return self.render(request, "documents.html", physician=physician, csrf=web_session.csrf_token, items=items,
                           total=total, page=page, pages=pages, flt=flt, shows=DOCUMENT_SHOWS, page_query=page_query,
                           sorts=SORTS, chosen=chosen,
                           hidden=hidden, by_profile=by_profile, select_all=q.get("select") == "all",
                           info=q.get("info"))

    async def document(self, request: Request) -> Response:
        web_session, physician = await self.current(request)
        item_id = int(request.path_params["item_id"])
        actor = f"web:{client_ip(request)}"

        delegated = self.delegate_of(request) is not None

        def load(session: Session) -> Any:
            """(summary, files) of a document; (summary, None) of one the DPI withdrew. One transaction."""
            try:
                return withdrawn_detail(session, self.sealer, physician, item_id, mark_seen=not delegated), None
            except DocumentUnavailable:
                return document_detail(session, self.sealer, physician, item_id, actor)

        try:
            summary, files = await run_in_threadpool(self.committed, load)
        except DocumentUnavailable:
            raise HTTPException(404, "Ce document n’existe pas ou n’est plus disponible.") from None
        if files is None:  # a document the DPI withdrew keeps a page that says so (410 Gone), without its content
            return self.render(request, "document_withdrawn.html", 410, physician=physician, doc=summary,
                               csrf=web_session.csrf_token)
        # The first PDF is shown in the page, by the browser's own viewer; other types are downloaded.
        pdf_position = next((n for n, (_, ctype, _) in enumerate(files) if ctype == "application/pdf"), None)
        return self.render(request, "document.html", physician=physician, csrf=web_session.csrf_token,
                           doc=summary, files=files, pdf_position=pdf_position,
                           xdm=Origin.of(self.settings.xdm) is not None)

    async def document_unread(self, request: Request) -> Response:
        web_session, physician = await self.current(request, own_only=True)  # the physician's own marks
        await checked_form(request, web_session.csrf_token)
        item_id = int(request.path_params["item_id"])
        actor = f"web:{client_ip(request)}"

        def step(session: Session) -> None:
            mark_unread(session, physician, item_id, actor)

        try:
            await run_in_threadpool(self.committed, step)
        except DocumentUnavailable:
            raise HTTPException(404, "Ce document n’existe pas, a été retiré ou n’est plus disponible.") from None
        return self.redirect("/documents?info=unread")

    async def document_file(self, request: Request) -> Response:
        _, physician = await self.current(request)
        item_id = int(request.path_params["item_id"])
        position = int(request.path_params["position"])
        actor = f"web:{client_ip(request)}"

        reader = self.delegate_of(request)

        def load(session: Session) -> tuple[str, str, bytes]:
            return open_attachment(session, self.sealer, physician, item_id, position, actor, reader)

        try:
            filename, content_type, data = await run_in_threadpool(self.committed, load)
        except DocumentUnavailable:
            raise HTTPException(404, "Ce document n’existe pas, a été retiré ou n’est plus disponible.") from None
        disposition = "attachment" if request.query_params.get("download") else "inline"
        ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
        return Response(
            data, media_type=content_type,
            headers={
                "Content-Disposition": f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}",
                # A document is data, never code in our origin: no scripts, no plugins. Chromium's own PDF
                # viewer works under the sandbox; our document page may frame it for the preview, nobody else.
                "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                                           "frame-ancestors 'self'",
                "X-Frame-Options": "SAMEORIGIN",
            },
        )

    async def documents_bulk(self, request: Request) -> Response:
        """The list's form: mark the selection seen or new, mark everything seen, or download the selection.

        One plain form POST (CSRF-checked), so that it works without JavaScript.
        """
        web_session, physician = await self.current(request)
        form = await checked_form(request, web_session.csrf_token)
        action = str(form.get("action", ""))
        try:
            selected = sorted({int(str(v)) for v in form.getlist("item")})[:500]
        except ValueError:
            raise HTTPException(400, "Sélection invalide.") from None
        # Back to the same list: only its query is kept, re-encoded, so the redirect can lead nowhere else.
        back = urlencode([(k, v) for k, v in parse_qsl(str(form.get("back", ""))) if k != "info"][:40])
        if action == "zip":
            return await self._archive(request, physician, selected, back)
        if action not in ("read", "unread", "all-read"):
            raise HTTPException(400, "Action inconnue.")
        if self.delegate_of(request) is not None:  # the "non lu" marks are the physician's own
            raise HTTPException(403, "Seul le médecin titulaire marque ses documents comme lus ou non lus.")
        if action != "all-read" and not selected:
            return self.redirect(f"/documents?{back}&info=none-selected")

        def step(session: Session) -> int:
            return mark_seen(session, physician, None if action == "all-read" else selected, action != "unread")

        await run_in_threadpool(self.committed, step)
        info = {"read": "seen", "unread": "unseen", "all-read": "all-seen"}[action]
        return self.redirect(f"/documents?{back}&info={info}")

    async def document_archive(self, request: Request) -> Response:
        """All the files of one document as a ZIP ("Tout télécharger")."""
        _, physician = await self.current(request)
        return await self._archive(request, physician, [int(request.path_params["item_id"])], None)

    async def document_xdm(self, request: Request) -> Response:
        """The document for practice software: IHE_XDM.zip (metadata, FHIR and files), when the OIDs are set."""
        _, physician = await self.current(request)
        origin = Origin.of(self.settings.xdm)
        if origin is None:
            raise HTTPException(404, "Ce serveur ne produit pas de paquet XDM.")
        item_id, actor, reader = int(request.path_params["item_id"]), f"web:{client_ip(request)}", \
            self.delegate_of(request)

        def build(session: Session) -> bytes:
            return practice_package(session, self.sealer, physician, item_id, actor, origin, reader)

        try:
            data = await run_in_threadpool(self.committed, build)
        except DocumentUnavailable:
            raise HTTPException(404, "Ce document n’existe pas, a été retiré ou n’est plus disponible.") from None
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="myHUG-{item_id}-IHE_XDM.zip"'})

    async def _archive(self, request: Request, physician: Physician, selected: list[int],
                       back: str | None) -> Response:
        actor, reader = f"web:{client_ip(request)}", self.delegate_of(request)

        def entries(session: Session) -> list[ArchiveEntry]:
            ids = available_items(session, physician, selected) if back is not None else selected
            return archive_entries(session, self.sealer, physician, ids, actor, reader) if ids else []

        try:
            files = await run_in_threadpool(self.committed, entries)
        except DocumentUnavailable:
            raise HTTPException(404, "Ce document n’existe pas, a été retiré ou n’est plus disponible.") from None
        if not files:
            return self.redirect(f"/documents?{back or ''}&info={'none-available' if selected else 'none-selected'}")
        # A neutral name: the file lands in a Downloads folder, where a patient's name has no business.
        name = f"myHUG-documents-{datetime.now():%Y%m%d-%H%M}.zip"
        return StreamingResponse(zip_stream(self.db, self.sealer, files), media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})
