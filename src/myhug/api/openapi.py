"""The OpenAPI 3.0 document of the DPI API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

FHIR = "application/fhir+json"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    descriptions = {400: "Invalid input", 401: "Missing or invalid bearer token", 404: "Not found",
                    429: "Too many invalid bearer tokens from this address; see Retry-After"}
    return {str(c): {"description": descriptions[c], "content": {FHIR: {"schema": _ref("OperationOutcome")}}}
            for c in (*codes, 429)}


def _path_param(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "myHUG gateway — DPI API",
            "version": "1",
            "description": "Recipient directory, consent registry, document status and recall, audit feed. "
                           "Resources are FHIR R4B; errors are OperationOutcome.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/practitioners": {"get": {
                "summary": "Activated recipients, as Practitioner + PractitionerRole",
                "parameters": [
                    {"name": "name", "in": "query", "schema": {"type": "string", "maxLength": 200},
                     "description": "prefix of a family or given name; accents and ae/oe/ue spellings ignored"},
                    {"name": "specialty", "in": "query", "schema": {"type": "string"},
                     "description": "MedReg code (urn:oid:2.16.756.5.30.1.127.3.5)"},
                    {"name": "gln", "in": "query", "schema": {"type": "string"}},
                    {"name": "_count", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"},
                     "description": "opaque position from the previous page's next link"},
                ],
                "responses": {"200": {"description": "searchset Bundle", "content": {FHIR: {"schema": _ref("Bundle")}}},
                              **_errors(400, 401)},
            }},
            "/api/v1/consents/{patient_id}/{gln}": {
                "parameters": [_path_param("patient_id", "the DPI's patient id"), _path_param("gln", "13-digit GLN")],
                "put": {"summary": "Record designation + authorization of electronic sending",
                        "responses": {"200": {"description": "Consent (active)", "content": {FHIR: {"schema": _ref("Consent")}}},
                                      **_errors(400, 401, 404)}},
                "delete": {"summary": "Revoke designation + authorization",
                           "responses": {"200": {"description": "Consent (inactive)", "content": {FHIR: {"schema": _ref("Consent")}}},
                                         **_errors(400, 401, 404)}},
            },
            "/api/v1/documents/{document_id}": {"get": {
                "summary": "Each recipient's state and audit trail",
                "parameters": [_path_param("document_id", "the DPI's document id")],
                "responses": {"200": {"description": "status", "content": {JSON: {"schema": _ref("DocumentStatus")}}},
                              **_errors(400, 401, 404)},
            }},
            "/api/v1/documents/{document_id}/retract": {"post": {
                "summary": "Withdraw a document sent in error",
                "parameters": [_path_param("document_id", "the DPI's document id")],
                "requestBody": {"required": False, "content": {JSON: {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 300,
                                              "description": "shown to the physician on the withdrawn line"}}}}}},
                "responses": {"200": {"description": "what was withdrawn", "content": {JSON: {"schema": _ref("Retraction")}}},
                              **_errors(400, 401, 404)},
            }},
            "/api/v1/audit": {"get": {
                "summary": "Audit events after a sequence number, in order, without gaps",
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "_count", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                ],
                "responses": {"200": {"description": "searchset Bundle of AuditEvent", "content": {FHIR: {"schema": _ref("Bundle")}}},
                              **_errors(400, 401)},
            }},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "the api token printed by `myhug dpi add-client`"}},
            "schemas": {
                "Bundle": {"type": "object", "required": ["resourceType", "type"],
                           "properties": {"resourceType": {"type": "string", "enum": ["Bundle"]},
                                          "type": {"type": "string"}, "entry": {"type": "array", "items": {"type": "object"}},
                                          "link": {"type": "array", "items": {"type": "object"}}}},
                "Consent": {"type": "object", "required": ["resourceType", "status"],
                            "properties": {"resourceType": {"type": "string", "enum": ["Consent"]},
                                           "status": {"type": "string", "enum": ["active", "inactive"]}}},
                "OperationOutcome": {"type": "object", "required": ["resourceType", "issue"],
                                     "properties": {"resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                                                    "issue": {"type": "array", "minItems": 1, "items": {"type": "object"}}}},
                "DocumentStatus": {"type": "object", "required": ["document_id", "recipients"],
                                   "properties": {"document_id": {"type": "string"},
                                                  "recipients": {"type": "array", "items": {
                                                      "type": "object",
                                                      "required": ["delivery_id", "state", "route", "audit"],
                                                      "properties": {"delivery_id": {"type": "string"},
                                                                     "gln": {"type": "string", "nullable": True},
                                                                     "state": {"type": "string"}, "route": {"type": "string"},
                                                                     "audit": {"type": "array", "items": {"type": "object"}}}}}}},
                "Retraction": {"type": "object", "required": ["document_id", "retracted"],
                               "properties": {"document_id": {"type": "string"},
                                              "retracted": {"type": "array", "items": {"type": "object"}}}},
            },
        },
    }
