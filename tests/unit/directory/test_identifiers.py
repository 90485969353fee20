import pytest

from myhug.directory.identifiers import (
    InvalidIdentifier,
    make_gln,
    normalize_address,
    normalize_mobile,
    validate_gln,
)
from myhug.directory.specialties import (
    MEDREG_SYSTEM,
    medreg_specialties,
    validate_specialty,
)


def test_gln_with_correct_gs1_check_digit_is_accepted() -> None:
    # 7601000000019: a GS1 Switzerland-prefixed GLN whose check digit is 9.
    assert validate_gln("7601000000019") == "7601000000019"
    assert make_gln("760100000001") == "7601000000019"


@pytest.mark.parametrize(
    ("gln", "reason"),
    [("7601000000018", "check digit"), ("760100000001", "13 digits"), ("76010000000a9", "13 digits"), ("", "13 digits")],
)
def test_invalid_gln_is_refused_with_reason(gln: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier, match=reason):
        validate_gln(gln)


def test_swiss_mobile_is_normalized_to_e164() -> None:
    assert normalize_mobile("079 123 45 67") == "+41791234567"
    assert normalize_mobile("+41 79 123 45 67") == "+41791234567"


def test_landline_is_refused_for_sms() -> None:
    with pytest.raises(InvalidIdentifier, match="not a mobile"):
        normalize_mobile("+41 22 372 62 01")


def test_address_normalized_and_garbage_refused() -> None:
    assert normalize_address("<Hans.Mueller@HIN.ch>") == "hans.mueller@hin.ch"
    with pytest.raises(InvalidIdentifier):
        normalize_address("not an address")


def test_medreg_list_is_shipped_with_french_labels() -> None:
    specialties = medreg_specialties()
    assert MEDREG_SYSTEM == "urn:oid:2.16.756.5.30.1.127.3.5"
    assert len(specialties) == 59
    assert specialties["1006"].label("fr") == "Pédiatrie"
    with pytest.raises(InvalidIdentifier, match="9999"):
        validate_specialty("9999")
