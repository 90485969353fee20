"""Throttling of bearer-token guessing on the DPI's API, by peer address.

A token is 256 random bits, so guessing it is hopeless; but a peer that
sends wrong tokens by the hundred is probing, and should be slowed and
seen. Past `max_failures` wrong or missing tokens within `window` seconds,
a peer gets 429 (with Retry-After) until its window has passed. It is
counted by address, not by token or client: a prober elsewhere never
locks the real DPI out, and the DPI's own address is throttled only if it
sends wrong tokens itself. Counts are kept in memory, per web process
(the API is served by one process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

log = logging.getLogger(__name__)


class TokenThrottle:
    """Counts a peer's failed authentications in a sliding window."""

    MAX_PEERS = 10_000  # a bound on memory: beyond, the oldest peers are forgotten
    MAX_FAILURES = 20
    WINDOW = 60.0

    def __init__(self, max_failures: int | None = None, window: float | None = None) -> None:
        self.max_failures = max_failures or self.MAX_FAILURES
        self.window = window or self.WINDOW
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, peer: str, now: float | None = None) -> int:
        """Seconds until `peer` may try again; 0 if it is not throttled."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._recent(peer, now)
            if failures is None or len(failures) < self.max_failures:
                return 0
            return max(1, int(failures[0] + self.window - now) + 1)

    def failed(self, peer: str, now: float | None = None) -> None:
        """Count one wrong or missing token from `peer`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._recent(peer, now)
            if failures is None:
                if len(self._failures) >= self.MAX_PEERS:
                    self._failures.pop(next(iter(self._failures)))
                failures = self._failures[peer] = deque()
            failures.append(now)
            if len(failures) == self.max_failures:
                log.warning("API: %d invalid bearer tokens from %s within %gs; throttled (429)",
                            self.max_failures, peer, self.window)

    def _recent(self, peer: str, now: float) -> deque[float] | None:
        failures = self._failures.get(peer)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[peer]
            return None
        return failures
