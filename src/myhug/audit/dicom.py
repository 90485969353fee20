"""Audit events as the DICOM PS3.15 A.5 audit message: the XML that IHE ITI-20 repositories read."""

from __future__ import annotations

import base64
from xml.etree import ElementTree as ET

from myhug.audit.balp import AuditRecord, AuditSource, Code, describe
from myhug.audit.models import AuditEvent


def _coded(parent: ET.Element, tag: str, code: Code) -> None:
    ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system_name,
                                "originalText": code.display})


def render_dicom(record: AuditRecord) -> bytes:
    """The `AuditMessage` of a described event, UTF-8, elements in the order the schema requires."""
    root = ET.Element("AuditMessage")
    identification = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": record.pattern.action,
        "EventDateTime": record.recorded.isoformat(timespec="microseconds"),
        "EventOutcomeIndicator": record.outcome,
    })
    _coded(identification, "EventID", record.pattern.event_id)
    for subtype in record.subtypes:
        _coded(identification, "EventTypeCode", subtype)
    if record.outcome_description:
        ET.SubElement(identification, "EventOutcomeDescription").text = record.outcome_description
    for p in record.participants:
        attributes = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
        if p.alt_user_id:
            attributes["AlternativeUserID"] = p.alt_user_id
        if p.name:
            attributes["UserName"] = p.name
        if p.network and p.network_type:
            attributes["NetworkAccessPointID"] = p.network
            attributes["NetworkAccessPointTypeCode"] = p.network_type
        participant = ET.SubElement(root, "ActiveParticipant", attributes)
        if p.role:
            _coded(participant, "RoleIDCode", p.role)
    source = record.source
    source_attributes = {"AuditSourceID": source.source_id}
    if source.site_id:
        source_attributes["AuditEnterpriseSiteID"] = source.site_id
    audit_source = ET.SubElement(root, "AuditSourceIdentification", source_attributes)
    ET.SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": "4"})  # application server process
    for o in record.objects:
        attributes = {"ParticipantObjectID": o.object_id, "ParticipantObjectTypeCode": o.type_code,
                      "ParticipantObjectTypeCodeRole": o.role}
        if o.lifecycle:
            attributes["ParticipantObjectDataLifeCycle"] = o.lifecycle
        obj = ET.SubElement(root, "ParticipantObjectIdentification", attributes)
        _coded(obj, "ParticipantObjectIDTypeCode", o.id_type)
        ET.SubElement(obj, "ParticipantObjectName").text = o.name
        for name, value in o.details:
            ET.SubElement(obj, "ParticipantObjectDetail", {"type": name,
                                                           "value": base64.b64encode(value.encode()).decode()})
    message: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return message


def to_dicom(event: AuditEvent, source: AuditSource) -> bytes:
    """The DICOM audit message of one trail entry."""
    return render_dicom(describe(event, source))
