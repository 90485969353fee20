"""Bearer-token guessing is throttled by peer address, in a sliding window, never by token."""

from __future__ import annotations

from myhug.api.throttle import TokenThrottle


def test_a_peer_is_throttled_after_the_failures_of_one_window_and_free_again_after_it() -> None:
    throttle = TokenThrottle(max_failures=3, window=60)
    for second in (0, 1, 2):
        assert throttle.retry_after("198.51.100.9", now=second) == 0
        throttle.failed("198.51.100.9", now=second)
    assert throttle.retry_after("198.51.100.9", now=3) == 58  # until the first failure leaves the window
    assert throttle.retry_after("192.0.2.1", now=3) == 0  # the DPI elsewhere is untouched
    assert throttle.retry_after("198.51.100.9", now=60.5) == 0


def test_failures_spread_wider_than_the_window_never_throttle() -> None:
    throttle = TokenThrottle(max_failures=3, window=10)
    for second in range(0, 100, 6):  # never three within ten seconds
        throttle.failed("198.51.100.9", now=second)
        assert throttle.retry_after("198.51.100.9", now=second) == 0
