"""Verifying the HIN side's DKIM signature on an inbound report: pass, fail, none, temperror, permerror."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest

from myhug.crypto.dkim import DkimSigner, verify_dkim
from myhug.crypto.keys import create_dkim_key, dkim_dns_record

FIXTURE = Path(__file__).parents[2] / "fixtures" / "dsn" / "postfix-3.7.11-delivered.eml"


@pytest.fixture(scope="module")
def hin_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("hin") / "dkim.pem"
    create_dkim_key(key)
    return key


def _dns(key: Path) -> dict[bytes, bytes]:
    return {b"mail._domainkey.hin.example.": dkim_dns_record(key).encode()}


def _lookup(records: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name)
    return lookup


def test_a_report_signed_by_the_hin_side_passes(hin_key: Path) -> None:
    signed = DkimSigner(hin_key, "hin.example", "mail").sign(FIXTURE.read_bytes())
    assert verify_dkim(signed, _lookup(_dns(hin_key))) == "pass d=hin.example"


def test_a_changed_report_fails(hin_key: Path) -> None:
    signed = DkimSigner(hin_key, "hin.example", "mail").sign(FIXTURE.read_bytes())
    forged = signed.replace(b"Action: delivered", b"Action: failed")
    assert verify_dkim(forged, _lookup(_dns(hin_key))) == "fail d=hin.example"


def test_an_unsigned_report_is_none_and_asks_no_dns() -> None:
    def no_dns(name: bytes, timeout: float = 5) -> bytes | None:
        raise AssertionError("no signature, no lookup")
    assert verify_dkim(FIXTURE.read_bytes(), no_dns) == "none"


def test_a_missing_key_is_a_permerror_and_a_dns_timeout_a_temperror(hin_key: Path) -> None:
    signed = DkimSigner(hin_key, "hin.example", "mail").sign(FIXTURE.read_bytes())
    assert verify_dkim(signed, _lookup({})) == "permerror"

    def timeout(name: bytes, timeout: float = 5) -> bytes | None:
        raise dkim.DnsTimeoutError("timed out")
    assert verify_dkim(signed, timeout) == "temperror"
