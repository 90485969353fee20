"""The Swiss MedReg specialist titles, shipped as package data."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from myhug.directory.identifiers import InvalidIdentifier
from myhug.directory.search import fold

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


# The MedReg list mixes the professions it registers; a physician looks for the medical titles first.
# Codes of the other professions, by group (French labels, as shown in "Mon profil" and the staff desk).
OTHER_PROFESSIONS: dict[str, tuple[str, ...]] = {
    "Médecine dentaire": ("1010", "1047", "1048", "1049"),
    "Pharmacie": ("1052", "1053"),
    "Psychologie et psychothérapie": ("1054", "1055", "1056", "1057", "1058"),
    "Chiropratique": ("1011",),
    "Autre": ("1050",),
}
MEDICAL_TITLES = "Titres de spécialiste en médecine"


def specialty_groups() -> list[tuple[str, list[Specialty]]]:
    """The specialties in groups, the medical titles first, each group sorted as French sorts (accents aside)."""
    every = medreg_specialties()
    others = {code for codes in OTHER_PROFESSIONS.values() for code in codes}

    def ordered(codes: list[str]) -> list[Specialty]:
        return sorted((every[c] for c in codes if c in every), key=lambda s: fold(s.fr))

    groups = [(MEDICAL_TITLES, ordered([c for c in every if c not in others]))]
    groups += [(label, ordered(list(codes))) for label, codes in OTHER_PROFESSIONS.items()]
    return [(label, items) for label, items in groups if items]
