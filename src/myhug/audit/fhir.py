"""Audit events as FHIR R4B AuditEvent resources (after IHE BALP), validated by fhir.resources."""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent

from myhug.audit.models import AuditEvent

DCM = "http://dicom.nema.org/resources/ontology/DCM"
GLN_SYSTEM = "urn:oid:2.51.1.3"
MYHUG_EVENT_SYSTEM = "urn:myhug:audit-event"

# DICOM event type and FHIR action (C/R/U/D/E) per gateway event.
_TYPES: dict[str, tuple[str, str, str]] = {
    "accepted": ("110107", "Import", "C"),
    "refused": ("110107", "Import", "C"),
    "relayed": ("110106", "Export", "E"),
    "delivered": ("110106", "Export", "E"),
    "deposited": ("110106", "Export", "C"),
    "held": ("110106", "Export", "E"),
    "deferred": ("110106", "Export", "E"),
    "failed": ("110106", "Export", "E"),
    "expired": ("110106", "Export", "D"),
    "retracted": ("110106", "Export", "D"),
    "notified": ("110106", "Export", "E"),
    "read": ("110106", "Export", "R"),
    "login": ("110114", "User Authentication", "E"),
    "login-failed": ("110114", "User Authentication", "E"),
    "logout": ("110114", "User Authentication", "E"),
    "sms-capped": ("110114", "User Authentication", "E"),
}
_OUTCOMES = {"success": "0", "deferred": "4", "refused": "4", "failure": "8"}


def to_fhir(event: AuditEvent) -> dict[str, Any]:
    """The FHIR AuditEvent of one trail entry (validated; no patient data is ever in the trail)."""
    code, display, action = _TYPES.get(event.event, ("110100", "Application Activity", "E"))
    agents: list[dict[str, Any]] = [
        {"type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
         "who": {"display": event.actor}, "requestor": event.actor.startswith(("dpi:", "web:", "hin:", "physician:"))},
    ]
    if event.physician_gln:
        agents.append({
            "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
            "who": {"identifier": {"system": GLN_SYSTEM, "value": event.physician_gln}}, "requestor": False,
        })
    entities: list[dict[str, Any]] = []
    if event.document_id:
        entities.append({"what": {"identifier": {"system": "urn:myhug:dpi-document-id", "value": event.document_id}},
                         "type": {"system": "http://hl7.org/fhir/resource-types", "code": "DocumentReference"}})
    if event.delivery_id:
        entities.append({"what": {"identifier": {"system": "urn:myhug:delivery-id", "value": event.delivery_id}}})
    detail = json.loads(event.detail or "{}")
    resource = {
        "resourceType": "AuditEvent",
        "id": f"myhug-{event.seq}",
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": MYHUG_EVENT_SYSTEM, "code": event.event}],
        "action": action,
        "recorded": event.occurred_at.isoformat(),
        "outcome": _OUTCOMES.get(event.outcome, "0"),
        "agent": agents,
        "source": {"site": "myHUG gateway", "observer": {"display": "myHUG gateway"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        **({"entity": entities} if entities else {}),
        "extension": [{"url": "urn:myhug:audit-chain", "valueString": f"{event.seq}:{event.hash}"}],
    }
    if detail.get("reason"):
        resource["outcomeDesc"] = str(detail["reason"])[:500]
    validated: dict[str, Any] = json.loads(FhirAuditEvent.model_validate(resource).model_dump_json())
    return validated
