"""The gateway's own Prometheus instruments (prometheus-client), counted where things happen.

A leaf module: the SMTP intake, the relay and the HIN route import it; the
`/metrics` exposition (`myhug.metrics`) adds what the database knows. A
`myhug serve` with child processes has every process count in files that
the exposition sums (prometheus-client's multiprocess mode, set up in
`cli.cmd_serve`); a single process exposes its own.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SUBMISSIONS = Counter("myhug_submissions", "DATA replies to the DPI's submissions, by reply code.", ["code"])
RELAY_ERRORS = Counter("myhug_relay_errors", "Relay attempts that failed, by class.", ["relay", "kind"])
DELIVERY_LATENCY = Histogram(
    "myhug_delivery_latency_seconds", "From acceptance to relayed (HIN) or deposited (hosted).", ["route"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
CRYPTO_SECONDS = Histogram(
    "myhug_crypto_seconds", "Time spent in gpg (encrypt and sign) and in DKIM signing, per message.", ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
