"""The Swiss MedReg specialist titles, shipped as package data."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from myhug.directory.identifiers import InvalidIdentifier

MEDREG_SYSTEM = "urn:oid:2.16.756.5.30.1.127.3.5"


@dataclass(frozen=True)
class Specialty:
    code: str
    en: str
    de: str
    fr: str
    it: str

    def label(self, language: str = "fr") -> str:
        return str(getattr(self, language, self.fr))


@cache
def medreg_specialties() -> dict[str, Specialty]:
    """Code -> specialty, in file order."""
    text = resources.files("myhug.data").joinpath("medreg-specialties.csv").read_text(encoding="utf-8")
    return {row["code"]: Specialty(**row) for row in csv.DictReader(text.splitlines())}


def validate_specialty(code: str) -> str:
    if code not in medreg_specialties():
        raise InvalidIdentifier(f"unknown MedReg specialty code {code!r} (system {MEDREG_SYSTEM})")
    return code
