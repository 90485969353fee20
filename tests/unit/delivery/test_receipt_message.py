"""Every receipt the DPI can get parses as RFC 6522 with the right parts, and holds no patient data."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime

import pytest

from myhug.audit.balp import AuditSource
from myhug.audit.models import AuditEvent
from myhug.audit.trail import RECEIPT_EVENTS
from myhug.config.settings import MailSettings
from myhug.delivery.models import Submission
from myhug.delivery.receipts import DELIVERY_STATUS, ReceiptContext, build_receipt


@pytest.mark.parametrize("name", sorted(RECEIPT_EVENTS))
def test_receipt_for_every_document_event(name: str) -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    event = AuditEvent(seq=7, occurred_at=now, event=name, actor="gateway:queue", outcome="success",
                       document_id="DOC-1", submission_id="SUB1", delivery_id="DEL1", physician_gln="7601000000019",
                       detail=json.dumps({"reason": "relay answered 451"}), prev_hash="0" * 64, hash="a" * 64)
    submission = Submission(id="SUB1", dpi_client_id=1, envelope_sender="dpi@hug.localhost", document_id="DOC-1",
                            document_type="lab-report", patient_ref="x" * 64, metadata_blob_id="B", received_at=now)
    raw = build_receipt(ReceiptContext(event, submission, "hans.mueller@hin.ch"), MailSettings(domain="myhug.localhost"),
                        AuditSource("gw.myhug.localhost"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF throughout, as signed and sent
    receipt = email.message_from_bytes(raw, policy=email.policy.default)
    assert receipt.get_content_type() == "multipart/report"
    assert receipt["X-MyHUG-Document-Id"] == "DOC-1" and receipt["X-MyHUG-Event"] == name
    assert receipt["To"] == "dpi@hug.localhost" and receipt["Auto-Submitted"] == "auto-replied"
    types = [p.get_content_type() for p in receipt.iter_parts()]
    if name in DELIVERY_STATUS:
        assert receipt.get_param("report-type") == "delivery-status"
        assert types == ["text/plain", "message/delivery-status", "application/fhir+json"]
        action, status = DELIVERY_STATUS[name]
        dsn = list(receipt.iter_parts())[1].as_string()
        assert f"Action: {action}" in dsn and f"Status: {status}" in dsn
        assert "Final-Recipient: rfc822; hans.mueller@hin.ch" in dsn
    else:
        assert types == ["text/plain", "application/fhir+json"]
    fhir = json.loads(list(receipt.iter_parts())[-1].get_content())
    assert fhir["resourceType"] == "AuditEvent" and fhir["subtype"][0]["code"] == name
    gln = {"system": "urn:oid:2.51.1.3", "value": "7601000000019"}
    if name == "accepted":  # imported: the physician is the addressee, an entity; exported: the destination agent
        assert gln in [e["what"]["identifier"] for e in fhir["entity"]]
    else:
        assert gln in [a["who"]["identifier"] for a in fhir["agent"]]
