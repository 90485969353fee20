"""Patients as a Swiss practice sorts and finds them: by surname, accents aside; dates as a secretary types them."""

from __future__ import annotations

import pytest

from myhug.mailbox.patient_names import matches_birthdate, sort_key, split_name, surname_first


@pytest.mark.parametrize("typed", ["08.04.1965", "8.4.1965", "08.04.65", "8.4.65", "08/04/1965", "8/4/1965",
                                   "08-04-1965", "1965-04-08", "08.04", "8.4", "1965", " 08.04.1965 "])
def test_every_usual_way_to_type_a_birth_date_finds_the_patient(typed: str) -> None:
    assert matches_birthdate("1965-04-08", typed)


@pytest.mark.parametrize("typed", ["04.08.1965", "08.04.1966", "08.04.66", "1966", "8.4.1865x", "65", "08", ""])
def test_another_day_or_year_does_not(typed: str) -> None:
    assert not matches_birthdate("1965-04-08", typed)


def test_a_list_sorts_by_surname_then_given_names_accents_aside() -> None:
    names = ["Agnès Gonçalves", "Agnès Favre", "Zoé Müller", "Bernard Favre", "Éric de la Tour", None, "Anne Zurbriggen",
             "Favre, Aline"]
    ordered = [surname_first(n) for n in sorted(names, key=sort_key)]
    assert ordered == ["de la Tour Éric", "Favre Agnès", "Favre Aline", "Favre Bernard", "Gonçalves Agnès",
                       "Müller Zoé", "Zurbriggen Anne", ""]


@pytest.mark.parametrize(("name", "parts"), [
    ("Agnès Favre", ("Favre", "Agnès")), ("Jean-Pierre Müller-Gonçalves", ("Müller-Gonçalves", "Jean-Pierre")),
    ("Favre, Agnès Marie", ("Favre", "Agnès Marie")), ("Ludwig van Beethoven", ("van Beethoven", "Ludwig")),
    ("Cher", ("Cher", "")),
])
def test_a_name_is_split_into_surname_and_given_names(name: str, parts: tuple[str, str]) -> None:
    assert split_name(name) == parts
