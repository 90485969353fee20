"""The same metadata as FHIR R4: a `Bundle` (collection) of one `DocumentReference` per file.

Newer practice software reads FHIR rather than ebRIM. The resources follow
the IHE MHD mapping of the XDS attributes (masterIdentifier = uniqueId,
category = classCode, type = typeCode, securityLabel = confidentialityCode,
content.format = formatCode); each attachment points at its file inside
`IHE_XDM.zip` and carries its size and SHA-1, so the software can match them.
They are checked by fhir.resources (R4B) before they leave.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from myhug.xdm.codes import CONFIDENTIALITY, FORMAT, Code, codes_for
from myhug.xdm.metadata import Origin, Package, stable_uuid, uid, xdm_name

SUBSET = "IHE_XDM/SUBSET01"


def _concept(code: Code) -> dict[str, Any]:
    return {"coding": [{"system": code.system, "code": code.code, "display": code.display}]}


def document_references(package: Package, origin: Origin) -> dict[str, Any]:
    """The `Bundle` of the package's `DocumentReference`s, as JSON-ready data."""
    codes = codes_for(package.document_type)
    created = package.created.isoformat(timespec="seconds")
    patient: dict[str, Any] = {"identifier": {"system": f"urn:oid:{origin.patient_id_root}",
                                              "value": package.patient_id}}
    if package.patient_name:
        patient["display"] = package.patient_name
    entries = []
    for position, file in enumerate(package.files):
        reference: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "id": f"document-{position + 1}",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                                 "value": f"urn:oid:{uid(package.document_id, str(position))}"},
            "identifier": [{"system": f"urn:oid:{origin.source_id}", "value": package.document_id}],
            "status": "current",
            "type": _concept(codes.type_code),
            "category": [_concept(codes.class_code)],
            "subject": patient,
            "date": created,
            "author": [{"display": package.author}] if package.author else [],
            "custodian": {"display": package.institution},
            "description": package.title or file.filename,
            "securityLabel": [_concept(CONFIDENTIALITY)],
            "content": [{
                "attachment": {
                    "contentType": file.content_type, "language": package.language,
                    "url": f"{SUBSET}/{xdm_name(position, file.filename)}", "size": len(file.data),
                    "hash": base64.b64encode(hashlib.sha1(file.data).digest()).decode(),  # noqa: S324 (FHIR's hash is SHA-1)
                    "title": file.filename, "creation": created,
                },
                "format": {"system": FORMAT.system, "code": FORMAT.code, "display": FORMAT.display},
            }],
        }
        if package.department:
            reference["context"] = {"practiceSetting": {"text": package.department}}
        if not reference["author"]:
            del reference["author"]
        entries.append({"fullUrl": f"urn:uuid:{stable_uuid(package.document_id, str(position))}",
                        "resource": reference})
    bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": created, "entry": entries}
    Bundle.model_validate(bundle)  # fhir.resources raises on anything R4B does not allow
    return bundle


def bundle_json(package: Package, origin: Origin) -> bytes:
    """The `Bundle` as `application/fhir+json` bytes (UTF-8)."""
    return json.dumps(document_references(package, origin), ensure_ascii=False, indent=1).encode()
