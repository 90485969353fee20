"""Per-document crypto costs on the HIN route, each against its former way in the same run.

    python bench/crypto.py [--rounds 200]

- DKIM signing of a 140 kB message: dkimpy's `dkim.sign` (the baseline: it parses
  the PEM key and does the RSA in pure Python every time) against `DkimSigner`
  (dkimpy canonicalisation and hashing, OpenSSL RSA, the key parsed once).
- Key lookup before encrypting: `gpg --list-keys` in a subprocess each time (the
  baseline) against `OpenPgp.key`, cached while the keyring files are unchanged.

Rounds alternate between the two ways, and the figures are CPU seconds of this
process and its children per operation, reported as a ratio to the baseline:
these machines are noisy, only same-run ratios count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import dkim

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from myhug.crypto.dkim import SIGNED_HEADERS, DkimSigner, canonical_crlf  # noqa: E402
from myhug.crypto.keys import create_dkim_key  # noqa: E402
from myhug.crypto.openpgp import OpenPgp  # noqa: E402
from tests.pgp_keys import make_keypair  # noqa: E402


def cpu() -> float:
    """CPU seconds of this process and of the children it waited for (gpg)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def message() -> bytes:
    body = (b"A" * 76 + b"\r\n") * 1800  # about 140 kB, like a base64 PDF of 100 kB
    return canonical_crlf(b"From: myHUG <receipts@myhug.localhost>\r\nTo: dr@hin.ch\r\nSubject: Document\r\n"
                          b"Message-ID: <1@myhug.localhost>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
                          + body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="myhug-bench-crypto-"))
    key_file = work / "dkim.pem"
    create_dkim_key(key_file)
    raw = message()
    pem = key_file.read_bytes()
    signer = DkimSigner(key_file, "myhug.localhost", "myhug")
    headers = [h for h in SIGNED_HEADERS if h.lower() in raw.split(b"\r\n\r\n")[0].lower()]
    pgp = OpenPgp(work / "gnupg")
    fingerprint = pgp.import_key(make_keypair(work / "physician", "dr@hin.ch").public).fingerprint

    def dkimpy_sign() -> None:
        dkim.sign(raw, b"myhug", b"myhug.localhost", pem, include_headers=headers,
                  canonicalize=(b"relaxed", b"relaxed"))

    def gateway_sign() -> None:
        signer.sign(raw)

    def list_keys() -> None:
        assert pgp.gpg.list_keys(keys=[fingerprint])

    def cached_key() -> None:
        assert pgp.key(fingerprint) is not None

    pairs = {"DKIM signing": (dkimpy_sign, gateway_sign), "key lookup": (list_keys, cached_key)}
    totals = {name: [0.0, 0.0] for name in pairs}
    print(f"{args.rounds} rounds, alternating; CPU per operation (process + children)")
    for round_number in range(args.rounds):
        for name, ways in pairs.items():
            order = (0, 1) if round_number % 2 == 0 else (1, 0)
            for index in order:
                start = cpu()
                ways[index]()
                totals[name][index] += cpu() - start
        if (round_number + 1) % 50 == 0:
            print(f"  {round_number + 1}/{args.rounds} rounds", file=sys.stderr)
    for name, (baseline, ours) in totals.items():
        per_base, per_ours = baseline / args.rounds * 1000, ours / args.rounds * 1000
        ratio = ours / baseline if baseline else float("nan")
        print(f"{name:14s} baseline {per_base:7.2f} ms   gateway {per_ours:7.2f} ms   ratio {ratio:.3f}")
    pgp.stop_agent()
    print(f"(machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
