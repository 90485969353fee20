"""Each trail event as IHE expects it: a valid DICOM PS3.15 audit message and a valid FHIR AuditEvent, saying the same."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from myhug.audit.balp import PATTERNS, AuditSource
from myhug.audit.dicom import to_dicom
from myhug.audit.fhir import to_fhir, validate_fhir
from myhug.audit.models import AuditEvent
from myhug.audit.trail import EVENTS

SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).parents[2] / "fixtures" / "atna" / "dicom-audit-message.rng")))
SOURCE = AuditSource("gw.hug.example", site_id="2.16.756.5.30.1.1")
GLN = "7601000000019"
NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


def _event(name: str, actor: str = "gateway:queue", **fields: object) -> AuditEvent:
    values: dict[str, object] = {"document_id": None, "submission_id": None, "delivery_id": None,
                                 "physician_gln": None, "outcome": "success", "detail": "{}"}
    values.update(fields)
    return AuditEvent(seq=42, occurred_at=NOW, event=name, actor=actor, prev_hash="0" * 64, hash="b" * 64, **values)


def _dicom(event: AuditEvent) -> etree._Element:
    root = etree.fromstring(to_dicom(event, SOURCE))
    SCHEMA.assertValid(root)
    return root


def _code(element: etree._Element) -> tuple[str, str, str]:
    return element.get("csd-code") or "", element.get("codeSystemName") or "", element.get("originalText") or ""


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_event_is_a_valid_dicom_message_and_fhir_audit_event(name: str) -> None:
    event = _event(name, document_id="DOC-7", submission_id="S1", delivery_id="D1", physician_gln=GLN,
                   detail=json.dumps({"fingerprint": "A" * 40, "reason": "relay said 451"}))
    root = _dicom(event)
    resource = to_fhir(event, SOURCE)
    # Not validated at run time (it cost as much as the rest of a receipt): exactly what R4B reads back.
    assert validate_fhir(resource) == resource
    pattern = PATTERNS[name]
    # Both renderings carry the same event id, action and outcome.
    assert _code(root.find("EventIdentification/EventID"))[0] == resource["type"]["code"] == pattern.event_id.code
    assert root.find("EventIdentification").get("EventActionCode") == resource["action"] == pattern.action
    assert root.find("EventIdentification").get("EventOutcomeIndicator") == resource["outcome"] == "0"
    assert [_code(c)[0] for c in root.findall("EventIdentification/EventTypeCode")] == \
        [c["code"] for c in resource["subtype"]]
    assert len(root.findall("ActiveParticipant")) == len(resource["agent"])
    assert len(root.findall("ParticipantObjectIdentification")) == len(resource.get("entity", []))


def test_the_schema_refuses_what_the_standard_refuses() -> None:
    """The transcribed schema is not a rubber stamp: a message without its EventID, or out of order, fails."""
    good = to_dicom(_event("login", actor="web:192.0.2.7", physician_gln=GLN), SOURCE)
    assert SCHEMA.validate(etree.fromstring(good))
    no_event_id = etree.fromstring(good)
    identification = no_event_id.find("EventIdentification")
    identification.remove(identification.find("EventID"))
    assert not SCHEMA.validate(no_event_id)
    reordered = etree.fromstring(good)
    reordered.append(reordered.find("EventIdentification"))  # must come first
    assert not SCHEMA.validate(reordered)
    bad_outcome = etree.fromstring(good)
    bad_outcome.find("EventIdentification").set("EventOutcomeIndicator", "1")
    assert not SCHEMA.validate(bad_outcome)


def test_login_is_user_authentication_with_the_physician_and_the_address() -> None:
    root = _dicom(_event("login", actor="web:192.0.2.7", physician_gln=GLN, detail='{"via": "sms"}'))
    assert _code(root.find("EventIdentification/EventID")) == ("110114", "DCM", "User Authentication")
    assert _code(root.find("EventIdentification/EventTypeCode")) == ("110122", "DCM", "Login")
    user, gateway = root.findall("ActiveParticipant")
    assert user.get("UserID") == GLN and user.get("UserIsRequestor") == "true"
    assert user.get("NetworkAccessPointID") == "192.0.2.7" and user.get("NetworkAccessPointTypeCode") == "2"
    assert gateway.get("UserID") == "gw.hug.example" and gateway.get("NetworkAccessPointTypeCode") == "1"
    assert gateway.get("UserIsRequestor") == "false"
    source = root.find("AuditSourceIdentification")
    assert source.get("AuditSourceID") == "gw.hug.example" and source.get("AuditEnterpriseSiteID") == "2.16.756.5.30.1.1"
    assert source.find("AuditSourceTypeCode").get("csd-code") == "4"


def test_logout_and_a_failed_login() -> None:
    logout = _dicom(_event("logout", actor="web:192.0.2.7", physician_gln=GLN))
    assert _code(logout.find("EventIdentification/EventTypeCode"))[:2] == ("110123", "DCM")
    failed = _dicom(_event("login-failed", actor="web:192.0.2.7", outcome="refused", detail='{"reason": "bad code"}'))
    assert failed.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert failed.findtext("EventIdentification/EventOutcomeDescription") == "bad code"


def test_import_names_the_dpi_as_source_and_the_document_as_a_report() -> None:
    root = _dicom(_event("accepted", actor="dpi:dpi-main", document_id="DOC-7", submission_id="S1", physician_gln=GLN))
    assert _code(root.find("EventIdentification/EventID")) == ("110107", "DCM", "Import")
    dpi, gateway = root.findall("ActiveParticipant")
    assert dpi.get("UserID") == "dpi:dpi-main" and dpi.get("UserIsRequestor") == "true"
    assert _code(dpi.find("RoleIDCode"))[0] == "110153"  # source
    assert _code(gateway.find("RoleIDCode"))[0] == "110152"  # destination
    physician, document = root.findall("ParticipantObjectIdentification")
    assert (physician.get("ParticipantObjectID"), physician.get("ParticipantObjectTypeCodeRole")) == (GLN, "8")
    assert document.get("ParticipantObjectID") == "DOC-7"
    assert (document.get("ParticipantObjectTypeCode"), document.get("ParticipantObjectTypeCodeRole"),
            document.get("ParticipantObjectDataLifeCycle")) == ("2", "3", "2")
    detail = document.find("ParticipantObjectDetail")
    assert detail.get("type") == "submission" and base64.b64decode(detail.get("value")) == b"S1"


def test_export_names_the_gateway_as_source_and_the_physician_as_destination() -> None:
    root = _dicom(_event("relayed", actor="gateway:hin", document_id="DOC-7", physician_gln=GLN))
    assert _code(root.find("EventIdentification/EventID")) == ("110106", "DCM", "Export")
    gateway, physician = root.findall("ActiveParticipant")
    assert gateway.get("UserIsRequestor") == "true" and _code(gateway.find("RoleIDCode"))[0] == "110153"
    assert physician.get("UserID") == GLN and _code(physician.find("RoleIDCode"))[0] == "110152"
    resource = to_fhir(_event("relayed", actor="gateway:hin", document_id="DOC-7", physician_gln=GLN), SOURCE)
    destination = resource["agent"][1]
    assert destination["who"]["identifier"] == {"system": "urn:oid:2.51.1.3", "value": GLN}
    assert resource["entity"][0]["role"]["code"] == "3" and resource["entity"][0]["lifecycle"]["code"] == "10"


def test_key_import_is_a_security_configuration_alert_naming_the_key() -> None:
    root = _dicom(_event("key-imported", actor="cli", physician_gln=GLN, detail=json.dumps({"fingerprint": "F" * 40})))
    assert _code(root.find("EventIdentification/EventID"))[0] == "110113"
    assert _code(root.find("EventIdentification/EventTypeCode"))[0] == "110129"
    roles = {o.get("ParticipantObjectID"): o.get("ParticipantObjectTypeCodeRole")
             for o in root.findall("ParticipantObjectIdentification")}
    assert roles == {GLN: "11", "F" * 40: "13"}


def test_no_patient_data_reaches_either_format() -> None:
    event = _event("accepted", actor="dpi:dpi-main", document_id="DOC-7",
                   detail=json.dumps({"patient_ref": "0123456789abcdef", "route": "hin"}))
    assert b"0123456789abcdef" not in to_dicom(event, SOURCE)
    assert "0123456789abcdef" not in json.dumps(to_fhir(event, SOURCE))


def test_markup_in_a_reason_is_escaped() -> None:
    root = _dicom(_event("failed", document_id="D", outcome="failure", detail=json.dumps({"reason": "<x>&</x>"})))
    assert root.findtext("EventIdentification/EventOutcomeDescription") == "<x>&</x>"


def test_balp_agents_carry_their_network_address() -> None:
    """IHE BALP 1.1.4 (IHE.BasicAudit.Create): the DPI's and the destination's agents name where they are."""
    accepted = _dicom(_event("accepted", actor="dpi:1", document_id="DOC-7", physician_gln=GLN,
                             detail=json.dumps({"peer": "10.1.2.3"})))
    dpi = accepted.findall("ActiveParticipant")[0]
    assert (dpi.get("NetworkAccessPointID"), dpi.get("NetworkAccessPointTypeCode")) == ("10.1.2.3", "2")
    relayed = _dicom(_event("relayed", actor="gateway:hin", document_id="DOC-7", physician_gln=GLN,
                            detail=json.dumps({"destination_host": "mail.hin.ch"})))
    physician = relayed.findall("ActiveParticipant")[1]
    assert (physician.get("NetworkAccessPointID"), physician.get("NetworkAccessPointTypeCode")) == ("mail.hin.ch", "1")
    deposited = to_fhir(_event("deposited", actor="gateway:hosted", document_id="DOC-7", physician_gln=GLN), SOURCE)
    assert deposited["agent"][1]["network"]["address"] == SOURCE.source_id  # the mailbox is this gateway's


def test_a_login_through_hin_names_the_physician_by_gln_and_the_address_the_gateway_saw() -> None:
    resource = to_fhir(_event("login", actor="web:192.0.2.44", physician_gln=GLN,
                              detail=json.dumps({"via": "hin", "hin_login": "hmueller"})), SOURCE)
    user = resource["agent"][0]
    assert user["who"]["identifier"] == {"system": "urn:oid:2.51.1.3", "value": GLN}
    assert user["network"]["address"] == "192.0.2.44"


def test_the_syslog_origin_names_the_installed_version() -> None:
    from importlib.metadata import version

    from myhug.audit.atna import _software_version

    assert _software_version() == version("myhug-gateway") != "0"
