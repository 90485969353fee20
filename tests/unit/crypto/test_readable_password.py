"""Temporary passwords are read from a letter and typed: no look-alike characters, enough entropy."""

from __future__ import annotations

import math

from myhug.crypto.passwords import READABLE, readable_password


def test_a_temporary_password_holds_no_look_alike_characters() -> None:
    look_alikes = set("0Oo1lIi5S2Z8Buv")
    for _ in range(200):
        password = readable_password()
        assert len(password) == 14 and not set(password) & look_alikes and set(password) <= set(READABLE)
    assert 14 * math.log2(len(set(READABLE))) > 75  # bits


def test_the_desk_and_the_cli_issue_such_passwords() -> None:
    from myhug.directory import admin, service

    assert service.readable_password is readable_password and admin.readable_password is readable_password
