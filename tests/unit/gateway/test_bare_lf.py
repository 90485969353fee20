"""The bare-LF and line-length guards: C counts and windows instead of a regular expression or one big split,
the same verdicts, chunk boundaries included."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from myhug.gateway.smtp import has_bare_cr, has_bare_lf, longest_line

REFERENCE = re.compile(rb"(?<!\r)\n")
line_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b"")) | st.sampled_from([b"\r", b"\n", b"\r\n"])


@given(st.lists(line_bytes, max_size=20).map(b"".join))
def test_same_verdict_as_the_look_behind_expression(data: bytes) -> None:
    assert has_bare_lf(data) == bool(REFERENCE.search(data))


@given(st.lists(line_bytes, max_size=20).map(b"".join), st.integers(min_value=0, max_value=400))
def test_a_message_read_in_two_chunks_gets_the_verdict_of_the_whole(data: bytes, cut: int) -> None:
    cut = min(cut, len(data))
    first, second = data[:cut], data[cut:]
    assert (has_bare_lf(first) or has_bare_lf(second, first[-1:])) == bool(REFERENCE.search(data))


def test_crlf_split_between_two_reads_is_not_a_bare_lf() -> None:
    assert not has_bare_lf(b"\nnext line\r\n", previous=b"\r")
    assert has_bare_lf(b"\nnext line\r\n", previous=b"x")


@given(st.lists(line_bytes, max_size=30).map(b"".join), st.integers(min_value=1, max_value=50))
def test_the_longest_line_by_windows_is_that_of_one_split(data: bytes, window: int) -> None:
    # The line-length guard splits a large message a window at a time; CRLFs cut by a window count once.
    assert longest_line(data, window) == max(map(len, data.split(b"\r\n")))


@given(st.lists(line_bytes, max_size=20).map(b"".join))
def test_a_bare_cr_is_a_cr_not_followed_by_lf(data: bytes) -> None:
    assert has_bare_cr(data) == bool(re.search(rb"\r(?!\n)", data))
