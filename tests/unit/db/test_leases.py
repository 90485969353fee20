"""Backoff of every work queue: the work's age, clamped between a minimum and a maximum (Postfix)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from myhug.db.leases import backoff


@pytest.mark.parametrize(("age", "expected"), [(0, 300), (299, 300), (1000, 1000), (4000, 4000), (10**6, 4000)])
def test_backoff_is_the_age_clamped(age: int, expected: int) -> None:
    assert backoff(timedelta(seconds=age), 300, 4000) == timedelta(seconds=expected)
