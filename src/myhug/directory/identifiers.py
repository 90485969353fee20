"""Validation of the identifiers the directory stores: GLN, mobile numbers, addresses."""

from __future__ import annotations

import re

import phonenumbers

from myhug.errors import PermanentFailure

# A DPI's patient or document identifier (SPEC §4 extension): letters, digits and ._:/-, at most 128.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


class InvalidIdentifier(PermanentFailure):
    """A GLN, phone number or address that does not validate; the message says why."""


def gln_check_digit(first12: str) -> int:
    """The GS1 mod-10 check digit of the first 12 digits of a GLN."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return (10 - total % 10) % 10


def validate_gln(gln: str) -> str:
    """Return `gln` if it is 13 digits with a correct GS1 check digit, else raise."""
    gln = gln.strip()
    if not re.fullmatch(r"\d{13}", gln):
        raise InvalidIdentifier(f"invalid GLN {gln!r}: expected 13 digits",
                                french=f"GLN invalide « {gln} » : il faut 13 chiffres.")
    if gln_check_digit(gln[:12]) != int(gln[12]):
        raise InvalidIdentifier(f"invalid GLN {gln!r}: wrong check digit",
                                french=f"GLN invalide « {gln} » : chiffre de contrôle erroné.")
    return gln


def make_gln(prefix12: str) -> str:
    """Complete 12 digits into a valid GLN (for demo data and tests)."""
    return prefix12 + str(gln_check_digit(prefix12))


def normalize_mobile(number: str, region: str = "CH") -> str:
    """A mobile number in E.164 form; Swiss numbers may be given nationally."""
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifier(f"invalid mobile number {number!r}: {exc}",
                                french=f"Numéro de mobile invalide « {number} ».") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidIdentifier(f"invalid mobile number {number!r}", french=f"Numéro de mobile invalide « {number} ».")
    kind = phonenumbers.number_type(parsed)
    if kind not in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        raise InvalidIdentifier(f"{number!r} is not a mobile number; SMS codes need one",
                                french=f"« {number} » n’est pas un numéro de mobile ; les codes SMS en demandent un.")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")


def normalize_address(address: str) -> str:
    """A lower-cased `local@domain` address, or raise."""
    address = address.strip().strip("<>").lower()
    if not _ADDRESS.match(address):
        raise InvalidIdentifier(f"invalid e-mail address {address!r}", french=f"Adresse e-mail invalide « {address} ».")
    return address
