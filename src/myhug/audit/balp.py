"""What each trail event means in IHE terms: one description, rendered as FHIR (BALP) or as DICOM XML (ITI-20).

The audit trail stores the gateway's own event names. Audit repositories
expect DICOM event codes (PS3.16 CID 400/401), agents with identifiers and
network addresses, and entities with a role. This module is the one place
that maps the former to the latter; `fhir.py` and `dicom.py` only render
the `AuditRecord` built here, so both formats always say the same thing.

Patient identity stays out, as it is out of the trail: a document is named
by the DPI's document id, a physician by the GLN.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from myhug.audit.models import AuditEvent
from myhug.config.settings import Settings

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
RFC3881_SYSTEM = "urn:ietf:rfc:3881"  # ParticipantObjectIDTypeCode values of RFC 3881 / DICOM A.5
MYHUG_EVENT_SYSTEM = "urn:myhug:audit-event"
GLN_SYSTEM = "urn:oid:2.51.1.3"  # GS1 Global Location Number, as the Swiss EPR names health professionals
ACTOR_SYSTEM = "urn:myhug:actor"
DOCUMENT_SYSTEM = "urn:myhug:dpi-document-id"
KEY_SYSTEM = "urn:myhug:openpgp-fingerprint"


@dataclass(frozen=True)
class Code:
    """A coded value: FHIR Coding and DICOM CodedValueType (csd-code, codeSystemName, originalText)."""

    code: str
    display: str
    system: str = DCM_SYSTEM
    system_name: str = "DCM"


def _dcm(code: str, display: str) -> Code:
    return Code(code, display)


# PS3.16 CID 400 (event id), 401 (event type) and 402 (participant role).
IMPORT = _dcm("110107", "Import")
EXPORT = _dcm("110106", "Export")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_SECURITY_ATTRIBUTES_CHANGED = _dcm("110137", "User Security Attributes Changed")
SECURITY_CONFIGURATION = _dcm("110129", "Security Configuration")
RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
PATIENT_RECORD = _dcm("110110", "Patient Record")
SOURCE_ROLE = _dcm("110153", "Source Role ID")
DESTINATION_ROLE = _dcm("110152", "Destination Role ID")
APPLICATION_ROLE = _dcm("110150", "Application")
REPORT_NUMBER = Code("9", "Report Number", RFC3881_SYSTEM, "RFC-3881")
USER_IDENTIFIER = Code("11", "User Identifier", RFC3881_SYSTEM, "RFC-3881")
URI_IDENTIFIER = Code("12", "URI", RFC3881_SYSTEM, "RFC-3881")


class Flow(StrEnum):
    """Which way the event goes, which decides who is source and who is destination."""

    IMPORT = "import"  # the DPI hands a document to the gateway
    EXPORT = "export"  # the gateway hands a document on towards the physician
    LOGIN = "login"  # a person authenticates (or fails to)
    ACCOUNT = "account"  # a security attribute of a user changes
    CONFIGURATION = "configuration"  # the gateway's security configuration changes (keys)


@dataclass(frozen=True)
class Pattern:
    """How one gateway event is reported: DICOM event id and type, action, and the BALP pattern it follows."""

    event_id: Code
    subtype: Code | None
    action: str  # C R U D E
    flow: Flow
    lifecycle: str | None  # ParticipantObjectDataLifeCycle of the document
    balp: str


_EXPORT_DOC = "ITI-20 Export (as the ITI-41 document source), BALP agents and entity"

PATTERNS: dict[str, Pattern] = {
    "accepted": Pattern(IMPORT, None, "C", Flow.IMPORT, "2", "ITI-20 Import (as the ITI-41 recipient), BALP agents"),
    "refused": Pattern(IMPORT, None, "C", Flow.IMPORT, "2", "ITI-20 Import, outcome 4 (minor failure)"),
    "relayed": Pattern(EXPORT, None, "R", Flow.EXPORT, "10", _EXPORT_DOC),
    "delivered": Pattern(EXPORT, None, "R", Flow.EXPORT, "10", _EXPORT_DOC),
    "deposited": Pattern(EXPORT, None, "R", Flow.EXPORT, "10", _EXPORT_DOC),
    "held": Pattern(EXPORT, None, "R", Flow.EXPORT, "10", _EXPORT_DOC),
    "deferred": Pattern(EXPORT, None, "R", Flow.EXPORT, "10", _EXPORT_DOC),
    "failed": Pattern(EXPORT, None, "R", Flow.EXPORT, "10", _EXPORT_DOC),
    "notified": Pattern(EXPORT, None, "E", Flow.EXPORT, None, _EXPORT_DOC),
    "read": Pattern(EXPORT, None, "R", Flow.EXPORT, "6", "ITI-20 Export, action R (as the ITI-43 repository)"),
    "delegated-read": Pattern(EXPORT, None, "R", Flow.EXPORT, "6",
                              "ITI-20 Export, action R, by a user on behalf of the physician"),
    "expired": Pattern(EXPORT, None, "D", Flow.EXPORT, "14", "ITI-20 Export, action D (logical deletion)"),
    "retracted": Pattern(EXPORT, None, "D", Flow.EXPORT, "14", "ITI-20 Export, action D (logical deletion)"),
    "login": Pattern(USER_AUTHENTICATION, LOGIN, "E", Flow.LOGIN, None, "BALP Login"),
    "login-failed": Pattern(USER_AUTHENTICATION, LOGIN, "E", Flow.LOGIN, None, "BALP Login, failure"),
    "sms-capped": Pattern(USER_AUTHENTICATION, LOGIN, "E", Flow.LOGIN, None, "BALP Login, failure"),
    "staff-login": Pattern(USER_AUTHENTICATION, LOGIN, "E", Flow.LOGIN, None, "BALP Login"),
    "staff-login-failed": Pattern(USER_AUTHENTICATION, LOGIN, "E", Flow.LOGIN, None, "BALP Login, failure"),
    "logout": Pattern(USER_AUTHENTICATION, LOGOUT, "E", Flow.LOGIN, None, "BALP Logout"),
    "access-denied": Pattern(SECURITY_ALERT, RESTRICTED_FUNCTION, "E", Flow.ACCOUNT, None, "DICOM Security Alert"),
    "key-imported": Pattern(SECURITY_ALERT, SECURITY_CONFIGURATION, "U", Flow.CONFIGURATION, None,
                            "DICOM Security Alert (security configuration)"),
    "key-removed": Pattern(SECURITY_ALERT, SECURITY_CONFIGURATION, "D", Flow.CONFIGURATION, None,
                           "DICOM Security Alert (security configuration)"),
    "consent-granted": Pattern(PATIENT_RECORD, None, "U", Flow.ACCOUNT, None, "DICOM Patient Record, update"),
    "consent-revoked": Pattern(PATIENT_RECORD, None, "U", Flow.ACCOUNT, None, "DICOM Patient Record, update"),
}
_ACCOUNT = Pattern(SECURITY_ALERT, USER_SECURITY_ATTRIBUTES_CHANGED, "U", Flow.ACCOUNT, None,
                   "DICOM Security Alert (user security attributes changed)")
for _name in ("registered", "activated", "suspended", "reactivated", "password-reset", "password-changed",
              "mobile-changed", "profile-changed", "hin-linked", "unlocked", "passkey-added", "passkey-removed",
              "device-trusted", "device-revoked", "delegate-linked", "delegate-unlinked"):
    PATTERNS[_name] = _ACCOUNT

OUTCOMES = {"success": "0", "deferred": "4", "refused": "4", "failure": "8"}


@dataclass(frozen=True)
class AuditSource:
    """The gateway as the audit source: the observer of every event."""

    source_id: str  # the host name the gateway announces
    site_id: str | None = None  # AuditEnterpriseSiteID: the hospital, when configured
    app_name: str = "myhug"

    @classmethod
    def of(cls, settings: Settings) -> AuditSource:
        """The source the settings describe."""
        audit = settings.audit
        return cls(settings.smtp.hostname, audit.enterprise_site_id, audit.app_name)


@dataclass(frozen=True)
class Participant:
    """An active participant (FHIR agent): who took part, from where, in which role."""

    user_id: str
    requestor: bool
    system: str = ACTOR_SYSTEM  # identifier system of user_id (the GLN system for physicians)
    alt_user_id: str | None = None
    name: str | None = None
    network: str | None = None
    network_type: str | None = None  # 1 machine name, 2 IP address
    role: Code | None = None


@dataclass(frozen=True)
class ParticipantObject:
    """An entity the event was about: a document, a user account or a key. Never a patient."""

    object_id: str
    id_type: Code
    system: str
    type_code: str  # 1 person, 2 system object
    role: str  # 3 report, 11 security user entity, 13 security resource
    name: str
    lifecycle: str | None = None
    details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class AuditRecord:
    """One trail event described in IHE terms."""

    seq: int
    chain_hash: str
    event: str
    recorded: datetime
    pattern: Pattern
    outcome: str
    outcome_description: str | None
    source: AuditSource
    participants: tuple[Participant, ...] = field(default_factory=tuple)
    objects: tuple[ParticipantObject, ...] = field(default_factory=tuple)

    @property
    def subtypes(self) -> tuple[Code, ...]:
        """The DICOM event type when there is one, then the gateway's own event name."""
        own = Code(self.event, self.event, MYHUG_EVENT_SYSTEM, "myHUG")
        return (self.pattern.subtype, own) if self.pattern.subtype else (own,)


_EXTERNAL_ACTORS = ("dpi:", "web:", "hin:", "staff:", "physician:")


def _requestor(event: AuditEvent, detail: dict[str, Any]) -> Participant | None:
    """The participant behind the actor, when it is not the gateway itself."""
    actor = event.actor
    kind, _, rest = actor.partition(":")
    if not actor.startswith(_EXTERNAL_ACTORS) and actor not in ("cli", "demo"):
        return None
    if kind == "web":
        # A browser: the user is the physician when known; the address is the peer the gateway saw.
        delegate = detail.get("delegate")
        if isinstance(delegate, dict):  # someone reading for the physician: they are the user (BALP "on behalf of")
            if delegate.get("gln"):
                return Participant(str(delegate["gln"]), True, GLN_SYSTEM, alt_user_id=actor,
                                   name=str(delegate.get("name") or ""), network=rest, network_type="2")
            return Participant(f"assistant:{delegate.get('login')}", True, alt_user_id=actor,
                               name=str(delegate.get("name") or ""), network=rest, network_type="2")
        if event.physician_gln:
            return Participant(event.physician_gln, True, GLN_SYSTEM, alt_user_id=actor, network=rest,
                               network_type="2")
        return Participant(actor, True, network=rest, network_type="2")
    if kind == "physician":
        return Participant(rest, True, GLN_SYSTEM, alt_user_id=actor)
    if kind == "hin" and rest in ("dsn", "mdn"):
        return Participant(actor, False, name="HIN relay")  # a report from the relay, not a person's request
    if kind == "dpi" and detail.get("peer"):
        # The DPI's SMTP client, from the address it submitted from.
        return Participant(actor, True, network=str(detail["peer"]), network_type="2")
    return Participant(actor, True)


def describe(event: AuditEvent, source: AuditSource) -> AuditRecord:
    """The IHE description of one trail event."""
    pattern = PATTERNS.get(event.event) or Pattern(
        _dcm("110100", "Application Activity"), None, "E", Flow.ACCOUNT, None, "DICOM Application Activity")
    detail = json.loads(event.detail or "{}")
    requestor = _requestor(event, detail)
    gateway_role = {Flow.IMPORT: DESTINATION_ROLE, Flow.EXPORT: SOURCE_ROLE}.get(pattern.flow, APPLICATION_ROLE)
    gateway = Participant(source.source_id, requestor is None or not requestor.requestor,
                          alt_user_id=source.app_name, name="myHUG gateway", network=source.source_id,
                          network_type="1", role=gateway_role)
    participants: list[Participant] = []
    if requestor is not None:
        if pattern.flow is Flow.IMPORT:
            requestor = dataclasses.replace(requestor, role=SOURCE_ROLE)
        participants.append(requestor)
    participants.append(gateway)
    objects: list[ParticipantObject] = []
    gln = event.physician_gln
    if gln and pattern.flow is Flow.EXPORT and not (requestor and requestor.user_id == gln):
        # Where the document went: the HIN relay it was handed to, or, for the hosted mailbox, this gateway.
        destination = detail.get("destination_host") or (source.source_id if event.event == "deposited" else None)
        participants.append(Participant(gln, False, GLN_SYSTEM, network=str(destination) if destination else None,
                                        network_type="1" if destination else None, role=DESTINATION_ROLE,
                                        # A delegated read: the physician the delegate read for, as a second agent.
                                        name="on behalf of" if detail.get("delegate") else None))
    elif gln and not (requestor and requestor.user_id == gln):
        # The physician the event is about: the addressee of an imported document (8 Doctor), else the
        # account whose security attributes changed (11 Security User Entity).
        object_role = "8" if pattern.flow is Flow.IMPORT else "11"
        objects.append(ParticipantObject(gln, USER_IDENTIFIER, GLN_SYSTEM, "1", object_role, gln))
    if event.document_id:
        details = tuple((k, v) for k, v in (("submission", event.submission_id), ("delivery", event.delivery_id)) if v)
        objects.append(ParticipantObject(event.document_id, REPORT_NUMBER, DOCUMENT_SYSTEM, "2", "3",
                                         event.document_id, pattern.lifecycle, details))
    if pattern.flow is Flow.CONFIGURATION and detail.get("fingerprint"):
        fingerprint = str(detail["fingerprint"])
        objects.append(ParticipantObject(fingerprint, URI_IDENTIFIER, KEY_SYSTEM, "2", "13", fingerprint))
    reason = detail.get("reason")
    return AuditRecord(
        seq=event.seq, chain_hash=event.hash, event=event.event, recorded=event.occurred_at, pattern=pattern,
        outcome=OUTCOMES.get(event.outcome, "0"), outcome_description=str(reason)[:500] if reason else None,
        source=source, participants=tuple(participants), objects=tuple(objects),
    )
