"""Audit events as FHIR R4B AuditEvent resources (IHE BALP), validated by fhir.resources."""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent

from myhug.audit.balp import AuditRecord, AuditSource, Code, Participant, ParticipantObject, describe
from myhug.audit.models import AuditEvent

ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/object-role"
LIFECYCLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"
CHAIN_EXTENSION = "urn:myhug:audit-chain"


def _coding(code: Code) -> dict[str, str]:
    return {"system": code.system, "code": code.code, "display": code.display}


def _agent(p: Participant) -> dict[str, Any]:
    agent: dict[str, Any] = {"who": {"identifier": {"system": p.system, "value": p.user_id}}, "requestor": p.requestor}
    if p.role:
        agent["type"] = {"coding": [_coding(p.role)]}
    if p.alt_user_id:
        agent["altId"] = p.alt_user_id
    if p.name:
        agent["name"] = p.name
    if p.network:
        agent["network"] = {"address": p.network, "type": p.network_type}
    return agent


def _entity(o: ParticipantObject) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "what": {"identifier": {"system": o.system, "value": o.object_id}},
        "type": {"system": ENTITY_TYPE_SYSTEM, "code": o.type_code},
        "role": {"system": OBJECT_ROLE_SYSTEM, "code": o.role},
    }
    if o.lifecycle:
        entity["lifecycle"] = {"system": LIFECYCLE_SYSTEM, "code": o.lifecycle}
    if o.details:
        entity["detail"] = [{"type": name, "valueString": value} for name, value in o.details]
    return entity


def render_fhir(record: AuditRecord) -> dict[str, Any]:
    """The FHIR AuditEvent of a described event.

    Not validated here: this runs for every receipt and API answer, and
    pydantic validation cost as much as the rest of a receipt. The tests
    validate every event kind with `validate_fhir` instead.
    """
    source = record.source
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"myhug-{record.seq}",
        "type": _coding(record.pattern.event_id),
        "subtype": [_coding(code) for code in record.subtypes],
        "action": record.pattern.action,
        "recorded": record.recorded.isoformat().replace("+00:00", "Z"),
        "outcome": record.outcome,
        "agent": [_agent(p) for p in record.participants],
        "source": {
            **({"site": source.site_id} if source.site_id else {}),
            "observer": {"identifier": {"value": source.source_id}, "display": "myHUG gateway"},
            "type": [{"system": SOURCE_TYPE_SYSTEM, "code": "4", "display": "Application Server"}],
        },
        **({"entity": [_entity(o) for o in record.objects]} if record.objects else {}),
        "extension": [{"url": CHAIN_EXTENSION, "valueString": f"{record.seq}:{record.chain_hash}"}],
    }
    if record.outcome_description:
        resource["outcomeDesc"] = record.outcome_description
    return resource


def validate_fhir(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as fhir.resources (R4B) reads it back; raises if it is not a valid AuditEvent."""
    validated: dict[str, Any] = json.loads(FhirAuditEvent.model_validate(resource).model_dump_json())
    return validated


def to_fhir(event: AuditEvent, source: AuditSource) -> dict[str, Any]:
    """The FHIR AuditEvent of one trail entry (no patient data is ever in the trail)."""
    return render_fhir(describe(event, source))
