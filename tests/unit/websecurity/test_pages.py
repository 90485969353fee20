"""Formats on the pages: Swiss dates and readable sizes, in French usage."""

from __future__ import annotations

import pytest

from myhug.websecurity.pages import readable_size, swiss_date


@pytest.mark.parametrize(("iso", "shown"), [("1948-03-02", "02.03.1948"), ("", ""), (None, ""),
                                            ("not a date", "not a date")])
def test_birth_dates_are_swiss(iso: str | None, shown: str) -> None:
    assert swiss_date(iso) == shown


@pytest.mark.parametrize(("octets", "shown"), [(600, "0,6 Ko"), (1024, "1,0 Ko"), (20 * 1024 * 1024, "20,0 Mo"),
                                               (1536 * 1024, "1,5 Mo")])
def test_sizes_are_readable(octets: int, shown: str) -> None:
    assert readable_size(octets) == shown
