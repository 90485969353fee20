"""FHIR R4B resources of the DPI API, built and validated with fhir.resources."""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.practitionerrole import PractitionerRole

from myhug.audit.balp import GLN_SYSTEM
from myhug.db.base import utcnow
from myhug.directory.models import Physician
from myhug.directory.specialties import MEDREG_SYSTEM, medreg_specialties

PATIENT_ID_SYSTEM = "urn:myhug:dpi-patient-id"


def _dump(resource: Any) -> dict[str, Any]:
    return dict(json.loads(resource.model_dump_json()))


def practitioner(physician: Physician, mail_domain: str) -> dict[str, Any]:
    telecom = []
    if physician.hin_address:
        telecom.append({"system": "email", "value": physician.hin_address, "use": "work"})
    if physician.login:
        telecom.append({"system": "email", "value": f"{physician.login}@{mail_domain}", "use": "work"})
    return _dump(Practitioner.model_validate({
        "resourceType": "Practitioner",
        "id": physician.gln,
        "identifier": [{"system": GLN_SYSTEM, "value": physician.gln}],
        "active": physician.status == "activated",
        "name": [{"family": physician.family_name, **({"given": [physician.given_name]} if physician.given_name else {})}],
        **({"telecom": telecom} if telecom else {}),
    }))


def practitioner_role(physician: Physician) -> dict[str, Any]:
    catalogue = medreg_specialties()
    specialties = [
        {"coding": [{"system": MEDREG_SYSTEM, "code": s.code,
                     "display": catalogue[s.code].fr if s.code in catalogue else s.code}]}
        for s in physician.specialties
    ]
    return _dump(PractitionerRole.model_validate({
        "resourceType": "PractitionerRole",
        "id": f"{physician.gln}-role",
        "active": physician.status == "activated",
        "practitioner": {"reference": f"Practitioner/{physician.gln}",
                         "identifier": {"system": GLN_SYSTEM, "value": physician.gln}},
        **({"specialty": specialties} if specialties else {}),
        "extension": [{"url": "urn:myhug:delivery-channel", "valueCode": physician.channel}],
    }))


def searchset(entries: list[dict[str, Any]], total: int | None, self_url: str, next_url: str | None) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return _dump(Bundle.model_validate({
        "resourceType": "Bundle", "type": "searchset", "timestamp": utcnow().isoformat(),
        **({"total": total} if total is not None else {}), "link": links,
        "entry": [{"resource": e, "fullUrl": f"urn:myhug:{e['resourceType']}/{e.get('id', '')}",
                   "search": {"mode": "match" if e["resourceType"] != "PractitionerRole" else "include"}}
                  for e in entries],
    }))


def consent(patient_id: str, physician: Physician, active: bool, updated_by: str) -> dict[str, Any]:
    now = utcnow().isoformat()
    return _dump(Consent.model_validate({
        "resourceType": "Consent",
        "status": "active" if active else "inactive",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"identifier": {"system": PATIENT_ID_SYSTEM, "value": patient_id}},
        "dateTime": now,
        "performer": [{"display": updated_by}],
        "policyRule": {"text": "Designation as treating physician and authorization of electronic sending"},
        "provision": {
            "type": "permit" if active else "deny",
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                            "code": "PRCP", "display": "primary information recipient"}]},
                       "reference": {"identifier": {"system": GLN_SYSTEM, "value": physician.gln}}}],
        },
    }))


def operation_outcome(severity: str, code: str, text: str) -> dict[str, Any]:
    return _dump(OperationOutcome.model_validate({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }))
