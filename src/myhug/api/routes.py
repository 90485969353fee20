"""The DPI's HTTP API (SPEC §6): bearer token of a DPI client, FHIR R4B JSON, OperationOutcome errors."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from myhug.api import fhir_resources as fhir
from myhug.api.openapi import openapi_document
from myhug.api.throttle import TokenThrottle
from myhug.audit.balp import AuditSource
from myhug.audit.fhir import to_fhir
from myhug.audit.models import AuditEvent
from myhug.blobs.store import Sealer
from myhug.crypto.passwords import token_hash
from myhug.db.session import Database
from myhug.delivery.agents import DeliveryAgent
from myhug.delivery.models import Delivery, Submission
from myhug.delivery.retraction import retract_document
from myhug.directory.identifiers import IDENTIFIER, InvalidIdentifier, validate_gln
from myhug.directory.models import DpiClient, Physician
from myhug.directory.service import (
    DirectoryError,
    find_by_gln,
    search_physicians,
    set_consent,
)
from myhug.directory.specialties import medreg_specialties
from myhug.websecurity.forms import client_ip

FHIR_JSON = "application/fhir+json"
MAX_COUNT = 100


class ApiError(Exception):
    """An error answered as a FHIR OperationOutcome with this HTTP status."""

    def __init__(self, status: int, code: str, text: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(text)
        self.status, self.code, self.text = status, code, text
        self.headers = dict(headers or {})


def fhir_response(body: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def error_response(error: ApiError) -> Response:
    response = fhir_response(fhir.operation_outcome("error", error.code, error.text), error.status)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="myhug"'
    response.headers.update(error.headers)
    return response


def _int_param(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,10}", raw) or not minimum <= int(raw) <= maximum:
        raise ApiError(400, "invalid", f"parameter {name} must be an integer from {minimum} to {maximum}")
    return int(raw)


def _patient_id(value: str) -> str:
    if not IDENTIFIER.fullmatch(value):
        raise ApiError(400, "invalid", "invalid patient id: letters, digits and ._:/- only, at most 128")
    return value


def _gln(value: str) -> str:
    try:
        return validate_gln(value)
    except InvalidIdentifier as exc:
        raise ApiError(400, "invalid", str(exc)) from None


MAX_REASON = 300


def _retraction_reason(body: bytes) -> str | None:
    """The optional `{"reason": "..."}` of a retraction: one line of at most 300 characters, or none."""
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid", "the body must be JSON: {\"reason\": \"...\"}, or empty") from None
    if not isinstance(data, dict) or set(data) - {"reason"}:
        raise ApiError(400, "invalid", "the body may only hold \"reason\"")
    reason = data.get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON \
            or any(unicodedata.category(c).startswith("C") for c in reason):
        raise ApiError(400, "invalid", f"reason must be one line of text, 1 to {MAX_REASON} characters")
    return reason.strip()


class DpiApi:
    """The DPI's HTTP API (SPEC §6), wired to the parts it uses."""

    def __init__(self, db: Database, sealer: Sealer, mail_domain: str, agents: Mapping[str, DeliveryAgent],
                 audit_source: AuditSource) -> None:
        self.db = db
        self.sealer = sealer
        self.mail_domain = mail_domain
        self.audit_source = audit_source
        self.agents = agents  # each route takes back what it delivered when a document is retracted
        self.throttle = TokenThrottle()

    def routes(self) -> list[Route]:
        return [
            Route("/api/openapi.json", self.openapi),
            Route("/api/v1/practitioners", self.practitioners),
            Route("/api/v1/consents/{patient_id}/{gln}", self.consent, methods=["PUT", "DELETE"]),
            Route("/api/v1/documents/{document_id}", self.document),
            Route("/api/v1/documents/{document_id}/retract", self.retract, methods=["POST"]),
            Route("/api/v1/audit", self.audit),
        ]

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    def _client(self, session: Session, request: Request) -> DpiClient:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "login", "a bearer token of a DPI client is required")
        client = session.scalar(select(DpiClient).where(DpiClient.api_token_hash == token_hash(token.strip())))
        if client is None or not client.active:
            raise ApiError(401, "login", "invalid bearer token")
        return client

    async def _run(self, request: Request, work: Any) -> Response:
        """Authenticate first (a missing token is a 401 whatever else is wrong), then run `work`."""
        def call() -> Response:
            # GETs only read: on SQLite they then never wait behind the gateway's writers.
            with (self.db.reading() if request.method == "GET" else self.db.transaction()) as session:
                client = self._client(session, request)
                response: Response = work(session, client)
                return response

        peer = client_ip(request)
        wait = self.throttle.retry_after(peer)
        if wait:
            raise ApiError(429, "throttled", f"too many invalid bearer tokens from this address; retry in {wait} s",
                           {"Retry-After": str(wait)})
        try:
            return await run_in_threadpool(call)  # an ApiError becomes an OperationOutcome in the app's handler
        except ApiError as exc:
            if exc.status == 401:
                self.throttle.failed(peer)
            raise

    # --- endpoints ---------------------------------------------------------------

    async def practitioners(self, request: Request) -> Response:
        q = request.query_params

        def work(session: Session, client: DpiClient) -> Response:
            name, specialty, gln = q.get("name") or None, q.get("specialty") or None, q.get("gln") or None
            count = _int_param(request, "_count", 20, 1, MAX_COUNT)
            cursor = q.get("cursor") or None
            if specialty and specialty not in medreg_specialties():
                raise ApiError(400, "invalid", f"unknown MedReg specialty code {specialty!r}")
            if name and len(name) > 200:
                raise ApiError(400, "invalid", "name is too long")
            if gln:
                gln = _gln(gln)
            try:
                page = search_physicians(session, name=name, specialty=specialty, gln=gln, limit=count, cursor=cursor)
            except DirectoryError as exc:
                raise ApiError(400, "invalid", str(exc)) from None
            entries: list[dict[str, Any]] = []
            for physician in page.physicians:
                entries.append(fhir.practitioner(physician, self.mail_domain))
                entries.append(fhir.practitioner_role(physician))
            base = str(request.url.remove_query_params("cursor"))
            next_url = None
            if page.next_cursor:
                params = {k: v for k, v in q.items() if k != "cursor"}
                params["cursor"] = page.next_cursor
                next_url = f"{request.url.path}?{urlencode(params)}"
            return fhir_response(fhir.searchset(entries, None, base, next_url))

        return await self._run(request, work)

    async def consent(self, request: Request) -> Response:
        granted = request.method == "PUT"

        def work(session: Session, client: DpiClient) -> Response:
            patient_id = _patient_id(request.path_params["patient_id"])
            gln = _gln(request.path_params["gln"])
            physician = find_by_gln(session, gln)
            if physician is None:
                raise ApiError(404, "not-found", f"no physician with GLN {gln}")
            actor = f"dpi:{client.id}"
            set_consent(session, self.sealer.patient_ref(patient_id), physician, granted=granted, actor=actor)
            return fhir_response(fhir.consent(patient_id, physician, granted, f"DPI client {client.name}"))

        return await self._run(request, work)

    def _deliveries(self, session: Session, client: DpiClient, document_id: str) -> list[Delivery]:
        if not IDENTIFIER.fullmatch(document_id) and not document_id.endswith("#retraction"):
            raise ApiError(400, "invalid", "invalid document id")
        deliveries = session.scalars(
            select(Delivery).join(Submission, Submission.id == Delivery.submission_id)
            .where(Delivery.document_id == document_id, Submission.dpi_client_id == client.id)
            .order_by(Delivery.created_at)
        ).all()
        if not deliveries:
            raise ApiError(404, "not-found", f"no document {document_id} from this DPI client")
        return list(deliveries)

    async def document(self, request: Request) -> Response:
        document_id = request.path_params["document_id"]

        def work(session: Session, client: DpiClient) -> Response:
            recipients = []
            for delivery in self._deliveries(session, client, document_id):
                physician = session.get(Physician, delivery.physician_id)
                events = session.scalars(
                    select(AuditEvent).where(AuditEvent.delivery_id == delivery.id).order_by(AuditEvent.seq)
                ).all()
                recipients.append({
                    "delivery_id": delivery.id,
                    "queue_id": delivery.submission_id,
                    "gln": physician.gln if physician else None,
                    "route": delivery.route,
                    "state": delivery.state,
                    "attempts": delivery.attempts,
                    "last_error": delivery.last_error,
                    "updated_at": delivery.updated_at.isoformat(),
                    "audit": [to_fhir(e, self.audit_source) for e in events],
                })
            return JSONResponse({"document_id": document_id, "recipients": recipients})

        return await self._run(request, work)

    async def retract(self, request: Request) -> Response:
        document_id = request.path_params["document_id"]
        reason = _retraction_reason(await request.body())

        def work(session: Session, client: DpiClient) -> Response:
            self._deliveries(session, client, document_id)  # 404 if not this client's
            done = retract_document(session, self.agents, dpi_client_id=client.id, document_id=document_id,
                                    actor=f"dpi:{client.id}", reason=reason)
            return JSONResponse({
                "document_id": document_id,
                "retracted": [{"delivery_id": r.delivery_id, "gln": r.physician_gln, "previous_state": r.previous_state,
                               "notice_delivery_id": r.notice_delivery_id} for r in done],
            })

        return await self._run(request, work)

    @staticmethod
    def _visible_events(client: DpiClient) -> tuple[ColumnElement[bool], ...]:
        """The audit events a client may read: its own submissions' and its own acts (consents, refusals).

        Another client's document ids, the physicians it wrote to and the
        webmail's logins are not its business; a client made with
        `--all-events` (the hospital's audit repository) reads them all.
        """
        if client.all_events:
            return ()
        own = select(Submission.id).where(Submission.dpi_client_id == client.id)
        return (or_(AuditEvent.submission_id.in_(own), AuditEvent.actor == f"dpi:{client.id}"),)

    async def audit(self, request: Request) -> Response:
        def work(session: Session, client: DpiClient) -> Response:
            after = _int_param(request, "after", 0, 0, 10**9)
            count = _int_param(request, "_count", 100, 1, 1000)
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.seq > after, *self._visible_events(client))
                .order_by(AuditEvent.seq).limit(count)
            ).all()
            entries = [to_fhir(e, self.audit_source) for e in events]
            next_url = f"{request.url.path}?{urlencode({'after': events[-1].seq, '_count': count})}" if len(events) == count else None
            bundle = fhir.searchset(entries, None, str(request.url), next_url)
            bundle["meta"] = {"tag": [{"system": "urn:myhug:audit-cursor", "code": str(events[-1].seq if events else after)}]}
            return fhir_response(bundle)

        return await self._run(request, work)
