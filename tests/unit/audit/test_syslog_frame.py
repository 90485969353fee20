"""ITI-20 syslog framing: RFC 5425 octet counting, RFC 5424 header, no documentation enterprise number."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from myhug.audit.atna import syslog_frame
from myhug.audit.models import AuditEvent
from myhug.config.settings import AuditSettings, Settings

EVENT = AuditEvent(seq=9, occurred_at=datetime(2026, 11, 27, 9, 30, tzinfo=UTC), event="relayed",
                   actor="gateway:hin", document_id="DOC-1", submission_id="S", delivery_id="D",
                   physician_gln="7601000000019", outcome="success", detail="{}", prev_hash="0" * 64, hash="c" * 64)
HEADER = re.compile(rb"^(\d+) <(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) ((?:\[[^\]]*\])+) \xef\xbb\xbf")


def _frame(**audit: object) -> tuple[re.Match[bytes], bytes]:
    settings = Settings(audit=AuditSettings(**audit))  # type: ignore[arg-type]
    frame = syslog_frame(EVENT, settings)
    head = HEADER.match(frame)
    assert head is not None, frame[:200]
    assert int(head.group(1)) == len(frame) - len(head.group(1)) - 1  # MSG-LEN counts the rest exactly
    return head, frame[head.end():]


def test_default_is_the_dicom_message_with_the_iti20_msgid() -> None:
    head, body = _frame()
    assert head.group(2) == b"85"  # facility 10 (authpriv), severity 5 (notice)
    assert head.group(7) == b"IHE+RFC-3881" and head.group(5) == b"myhug"
    assert body.startswith(b"<AuditMessage>") and b'csd-code="110106"' in body
    sd = head.group(8).decode()
    assert '[meta sequenceId="9"]' in sd and "[origin software=\"myhug\"" in sd
    assert "@" not in sd and "32473" not in sd  # no private SD-ID without the hospital's enterprise number


def test_fhir_json_is_an_option() -> None:
    head, body = _frame(syslog_format="fhir-json")
    assert head.group(7) == b"IHE+FHIR"
    assert json.loads(body)["resourceType"] == "AuditEvent"


def test_the_hospitals_enterprise_number_adds_the_chain_element() -> None:
    head, _ = _frame(enterprise_number=54321)
    sd = head.group(8).decode()
    assert f'[myhug@54321 seq="9" event="relayed" hash="{"c" * 64}"]' in sd and 'enterpriseId="54321"' in sd


def test_the_documentation_enterprise_number_is_refused() -> None:
    with pytest.raises(ValidationError, match="RFC 5612"):
        AuditSettings(enterprise_number=32473)


def test_a_fhir_endpoint_must_be_https_unless_loopback() -> None:
    with pytest.raises(ValidationError, match="https"):
        AuditSettings(fhir_endpoint="http://arr.example/fhir/AuditEvent")
    with pytest.raises(ValidationError, match="https"):
        AuditSettings(fhir_endpoint="http://127.0.0.1.evil.example/AuditEvent")
    assert AuditSettings(fhir_endpoint="https://arr.example/fhir/AuditEvent").fhir_endpoint
    assert AuditSettings(fhir_endpoint="http://127.0.0.1:8080/AuditEvent").fhir_endpoint
