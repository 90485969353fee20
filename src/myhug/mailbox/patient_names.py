"""A patient's name and birth date as a Swiss practice reads, sorts and types them.

The DPI sends one name (`X-MyHUG-Patient-Name`), given names first ("Agnès
Favre") or, with a comma, surname first ("Favre, Agnès"). Lists sort by
surname, then given names, accents aside, and show the surname first.
A secretary types a birth date as 08.04.1965, 8.4.1965, 08.04.65,
08/04/1965 or 1965-04-08; each finds the patient born on 8 April 1965.
"""

from __future__ import annotations

import re

from myhug.directory.search import fold

# Words that belong to the surname that follows them ("Jean de la Tour" sorts under "de la Tour").
_PARTICLES = frozenset({"de", "du", "des", "la", "le", "di", "da", "del", "della", "dos", "das", "van", "von", "der",
                        "den", "ter", "zu", "af", "y"})
_DATE = re.compile(r"(\d{1,2})[./\- ](\d{1,2})(?:[./\- ](\d{4}|\d{2}))?")
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")


def split_name(name: str) -> tuple[str, str]:
    """(surname, given names) of a name as the DPI sends it."""
    name = " ".join(name.split())
    if "," in name:
        surname, _, given = name.partition(",")
        return surname.strip(), given.strip()
    words = name.split(" ")
    if len(words) < 2:
        return name, ""
    start = len(words) - 1
    while start > 1 and words[start - 1].lower() in _PARTICLES:
        start -= 1
    return " ".join(words[start:]), " ".join(words[:start])


def surname_first(name: str | None) -> str:
    """ "Agnès Favre" -> "Favre Agnès": how a list sorted by patient shows the name."""
    if not name:
        return ""
    surname, given = split_name(name)
    return f"{surname} {given}".strip()


def sort_key(name: str | None) -> tuple[str, str]:
    """Surname, then given names, accents and case aside; a patient without a name comes last."""
    if not name:
        return ("\uffff", "")
    surname, given = split_name(name)
    return fold(surname), fold(given)


def matches_birthdate(birthdate: str | None, text: str) -> bool:
    """Does `text`, typed as a Swiss secretary types a date (or part of one), name this ISO birth date?

    A full date in any of the usual forms must be the same day; a day and a
    month without a year (08.04) match that day of any year; a year alone
    (1965) matches that year. A two-digit year matches the last two digits.
    """
    if not birthdate or not (iso := _ISO.fullmatch(birthdate)):
        return False
    year, month, day = (int(part) for part in iso.groups())
    text = text.strip()
    if re.fullmatch(r"\d{4}", text):
        return int(text) == year
    typed = _ISO.fullmatch(text)
    if typed:
        return (int(typed[1]), int(typed[2]), int(typed[3])) == (year, month, day)
    swiss = _DATE.fullmatch(text)
    if not swiss:
        return False
    if (int(swiss[1]), int(swiss[2])) != (day, month):
        return False
    typed_year = swiss[3]
    if typed_year is None:
        return True
    return int(typed_year) == year if len(typed_year) == 4 else int(typed_year) == year % 100
