"""An independent check of an IHE_XDM.zip and its FHIR Bundle, for the tests: the published schemas (OASIS
ebRIM 3.0 as IHE uses it; the FHIR R4B JSON schema and fhir.resources), then what schemas cannot see:
each file's hash and size, the patient id with its assigning authority, the dates."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import zipfile
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from fhir.resources.R4B.bundle import Bundle
from lxml import etree

VENDOR = Path(__file__).parent / "vendor"
RIM = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"
PATIENT_ID_SCHEME = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
CX = re.compile(r"^[^^&]+\^\^\^&[0-2](\.\d+)+&ISO$")


@cache
def ebrim_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(VENDOR / "ebxml-regrep-3.0" / "lcm.xsd")))


@cache
def fhir_validator() -> jsonschema.Draft6Validator:
    schema = json.loads(gzip.decompress((VENDOR / "fhir-r4b" / "fhir.schema.json.gz").read_bytes()))
    return jsonschema.Draft6Validator({"$ref": "#/definitions/Bundle", "definitions": schema["definitions"]})


def _slot(node: etree._Element, name: str) -> list[str]:
    return [v.text or "" for v in node.findall(f"{RIM}Slot[@name='{name}']/{RIM}ValueList/{RIM}Value")]


def _dtm(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y%m%d%H%M%S"[: {4: 2, 8: 6, 12: 10, 14: 12}.get(len(value), 12) + 2])
    except ValueError:
        return False
    return len(value) in (4, 8, 12, 14)


def metadata_problems(package: bytes, metadata: bytes | None = None) -> list[str]:
    """What is wrong with the package (its METADATA.XML, or `metadata` in its place); [] when nothing."""
    problems: list[str] = []
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        names = set(archive.namelist())
        for required in ("INDEX.HTM", "README.TXT", "IHE_XDM/SUBSET01/METADATA.XML"):
            if required not in names:
                problems.append(f"missing {required}")
        document = etree.fromstring(metadata or archive.read("IHE_XDM/SUBSET01/METADATA.XML"))
        schema = ebrim_schema()
        if not schema.validate(document):
            problems += [f"schema: {e.message}" for e in schema.error_log]  # type: ignore[attr-defined]
        entries = document.iter(f"{RIM}ExtrinsicObject")
        for entry in entries:
            uri = "IHE_XDM/SUBSET01/" + (_slot(entry, "URI") or [""])[0]
            if uri not in names:
                problems.append(f"{entry.get('id')}: no file {uri}")
                continue
            data = archive.read(uri)
            if _slot(entry, "hash") != [hashlib.sha1(data).hexdigest()]:  # noqa: S324
                problems.append(f"{entry.get('id')}: hash does not match {uri}")
            if _slot(entry, "size") != [str(len(data))]:
                problems.append(f"{entry.get('id')}: size does not match {uri}")
            if not all(_dtm(v) for v in _slot(entry, "creationTime")) or not _slot(entry, "creationTime"):
                problems.append(f"{entry.get('id')}: bad creationTime {_slot(entry, 'creationTime')}")
            ids = [e.get("value") or "" for e in entry.findall(f"{RIM}ExternalIdentifier")
                   if e.get("identificationScheme") == PATIENT_ID_SCHEME]
            if len(ids) != 1 or not CX.match(ids[0]):
                problems.append(f"{entry.get('id')}: patient id missing or without its assigning authority")
    return problems


def fhir_problems(bundle: dict[str, Any], package: bytes) -> list[str]:
    """What is wrong with the FHIR Bundle: both validators, then the hashes and the patient ids."""
    problems = [f"json schema: {e.message}" for e in fhir_validator().iter_errors(bundle)]
    try:
        Bundle.model_validate(bundle)
    except Exception as exc:  # noqa: BLE001 (any refusal of the validator is a problem to report)
        problems.append(f"fhir.resources: {str(exc)[:300]}")
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        for entry in bundle.get("entry", []):
            reference = entry.get("resource", {})
            attachment = reference.get("content", [{}])[0].get("attachment", {})
            data = archive.read(attachment.get("url", "")) if attachment.get("url") in archive.namelist() else b""
            if attachment.get("hash") != base64.b64encode(hashlib.sha1(data).digest()).decode():  # noqa: S324
                problems.append(f"{reference.get('id')}: hash does not match")
            if not reference.get("subject", {}).get("identifier", {}).get("value"):
                problems.append(f"{reference.get('id')}: no patient id")
    return problems
