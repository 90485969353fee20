"""OpenPGP for what leaves the gateway (python-gnupg over gpg 2.2).

The gateway has its own GnuPG home in the data dir. Keys are bound to a
recipient by fingerprint when imported, and made valid with the *direct*
trust model: the gateway trusts exactly the keys an operator imported and
pinned, never a key found elsewhere, and never encrypts with `always_trust`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from io import RawIOBase
from pathlib import Path
from typing import BinaryIO

import gnupg

from myhug.errors import PermanentFailure

log = logging.getLogger(__name__)

# zlib at its fastest level before encrypting. Measured on the HIN route's plaintext (a 100 kB document,
# base64 in MIME): gpg's default level 6 took 16.8 ms of CPU per document, level 1 took 10.7 ms and no
# compression 8.4 ms; the armoured output was 98 kB, 102 kB and 183 kB. Level 1 keeps nearly all of
# the size gain (base64 alone is a third bigger than the bytes it carries) for a third of the cost.
COMPRESS_LEVEL = "1"

# The encrypting gpg neither reads nor rewrites the home's `random_seed` file. Libgcrypt locks that file
# with fcntl(F_SETLK) and, when another gpg holds it, polls after sleeping 0.25 s, then 1.25 s, 2.25 s...:
# with several deliveries encrypting at once, one gpg in a few waited 0.3-3.8 s on it (a wall-clock profile
# of a worker: most of its time in `pgp_mime`, for 10 ms of gpg CPU). Without the file, libgcrypt seeds
# from the kernel (getrandom) at each start, which libgcrypt's own comment prefers anyway: gpg processes
# started together from one seed file read out the same pool and their randomness is correlated.
#
# ZIP (raw deflate, RFC 4880's universal fallback) rather than the ZLIB a key's preferences usually name:
# the same deflate without zlib's wrapper, and gpg gives it a smaller window, which finds as much in base64.
# Measured on a 100 kB document, encrypted and signed 60 times, 3 alternated rounds: 5.9-6.1 ms of gpg CPU
# against 6.7-6.8 ms, and 1-2 % smaller.
ENCRYPT_OPTIONS = ("--compress-algo", "zip", "--compress-level", COMPRESS_LEVEL, "--no-random-seed-file")

_ADDRESS = re.compile(r"<([^<>@\s]+@[^<>\s]+)>|^([^<>@\s]+@[^<>\s]+)$")


class KeyRefused(PermanentFailure):
    """A key that cannot be used: expired, revoked, unusable for encryption, or malformed."""


class EncryptionFailed(PermanentFailure):
    pass


@dataclass(frozen=True)
class KeyInfo:
    fingerprint: str
    uids: list[str]
    addresses: list[str]
    expires_at: datetime | None
    problem: str | None  # why the key is unusable, or None

    @property
    def usable(self) -> bool:
        return self.problem is None


def _addresses(uids: list[str]) -> list[str]:
    found = []
    for uid in uids:
        match = _ADDRESS.search(uid.strip())
        if match:
            found.append((match.group(1) or match.group(2)).lower())
    return found


def _info(raw: dict[str, object]) -> KeyInfo:
    uids = [str(u) for u in raw.get("uids", [])]  # type: ignore[attr-defined]
    expires = str(raw.get("expires") or "")
    expires_at = datetime.fromtimestamp(int(expires), UTC) if expires.isdigit() else None
    trust, cap = str(raw.get("trust", "")), str(raw.get("cap", ""))
    problem = None
    if trust == "r":
        problem = "the key is revoked"
    elif trust == "e" or (expires_at is not None and expires_at <= datetime.now(UTC)):
        problem = "the key has expired"
    elif trust in ("d", "i") or "D" in cap:
        problem = "the key is disabled or invalid"
    elif "E" not in cap:
        problem = "the key has no usable encryption subkey"
    return KeyInfo(str(raw["fingerprint"]), uids, _addresses(uids), expires_at, problem)


def stop_agent(home: Path) -> None:
    """Stop the gpg-agent of one GnuPG home, and only that one (never by process name)."""
    try:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not stop the gpg-agent of %s: %s", home, exc)


class OpenPgp:
    """The gateway's keyring of recipient keys."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
        self.home = home
        self.gpg = gnupg.GPG(gnupghome=str(home), options=["--trust-model", "direct"])
        self.gpg.encoding = "utf-8"
        self._signing: dict[str, str] = {}
        # Key listings, kept while the keyring files are unchanged: a delivery then runs one gpg (the
        # encrypting one) instead of a `--list-keys` first. An import by another process (`myhug key
        # import`) changes the files, which empties the cache; expiry is re-judged at each lookup.
        self._listed: dict[str, dict[str, object] | None] = {}
        self._keyring_stamp: tuple[int, ...] = ()

    def signing_key(self, address: str) -> str:
        """The fingerprint of the gateway's own signing key for `address`, created on first use.

        Ed25519, sign-only, without passphrase: the gateway signs unattended,
        as it DKIM-signs; the key is as safe as the 0700 GnuPG home. A file
        lock keeps two processes from creating two keys for one address.
        """
        if address in self._signing:
            return self._signing[address]
        with open(self.home / "signing-key.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fingerprint = self._find_signing_key(address)
            if fingerprint is None:
                spec = self.gpg.gen_key_input(key_type="EDDSA", key_curve="ed25519", key_usage="sign",
                                              name_real="myHUG gateway", name_email=address, expire_date="0",
                                              no_protection=True)
                result = self.gpg.gen_key(spec)
                if not result.fingerprint:
                    raise EncryptionFailed(f"gpg could not create the gateway signing key: {result.stderr[-300:]}")
                fingerprint = str(result.fingerprint)
                log.info("created the gateway OpenPGP signing key %s for %s", fingerprint, address)
        self._signing[address] = fingerprint
        return fingerprint

    def _find_signing_key(self, address: str) -> str | None:
        for raw in self.gpg.list_keys(secret=True):
            if address.lower() in _addresses(raw["uids"]):
                return str(raw["fingerprint"])
        return None

    def export_public(self, fingerprint: str) -> str:
        """The armored public key, as physicians or HIN pin it."""
        exported = self.gpg.export_keys([fingerprint], armor=True)
        return str(exported)

    def stop_agent(self) -> None:
        """Stop this home's gpg-agent (it outlives the process otherwise); the next gpg call starts one."""
        stop_agent(self.home)

    def scan(self, data: bytes) -> list[KeyInfo]:
        """What a key file holds, without importing it."""
        with tempfile.NamedTemporaryFile(suffix=".asc") as handle:
            handle.write(data)
            handle.flush()
            return [_info(k) for k in self.gpg.scan_keys(handle.name)]

    def import_key(self, data: bytes) -> KeyInfo:
        """Import one public key; refuse it, with the reason, if it cannot encrypt now."""
        scanned = self.scan(data)
        if not scanned:
            raise KeyRefused("no OpenPGP public key found in the file")
        if len(scanned) > 1:
            raise KeyRefused(f"the file holds {len(scanned)} keys; import one key per file")
        result = self.gpg.import_keys(data)
        if not result.fingerprints:
            raise KeyRefused(f"gpg refused the key: {result.stderr.strip().splitlines()[-1] if result.stderr else 'unknown'}")
        fingerprint = result.fingerprints[0]
        info = self.key(fingerprint)
        if info is None:
            raise KeyRefused("the key vanished after import")
        if not info.usable:
            self.gpg.delete_keys(fingerprint)
            raise KeyRefused(f"key {fingerprint}: {info.problem}")
        self.gpg.trust_keys([fingerprint], "TRUST_FULLY")
        return info

    def delete_key(self, fingerprint: str) -> None:
        """Remove a recipient's public key from the keyring (never a secret key: the gateway's own stays)."""
        self.gpg.delete_keys([fingerprint])

    def key(self, fingerprint: str) -> KeyInfo | None:
        """What gpg says of one key now (usable, expiry, problem), from the cache while the keyring is unchanged."""
        stamp = self._stamp()
        if stamp != self._keyring_stamp:
            self._listed.clear()
            self._keyring_stamp = stamp
        if fingerprint not in self._listed:
            keys = self.gpg.list_keys(keys=[fingerprint])
            self._listed[fingerprint] = dict(keys[0]) if keys else None
        raw = self._listed[fingerprint]
        return _info(raw) if raw is not None else None

    def _stamp(self) -> tuple[int, ...]:
        """Size and modification time of the files gpg keeps keys and trust in."""
        stamp: list[int] = []
        for name in ("pubring.kbx", "pubring.gpg", "trustdb.gpg"):
            try:
                info = (self.home / name).stat()
            except FileNotFoundError:
                stamp += [0, 0]
            else:
                stamp += [info.st_mtime_ns, info.st_size]
        return tuple(stamp)

    def encrypt(self, source: BinaryIO | RawIOBase, output: Path, fingerprint: str, sign_as: str | None = None) -> None:
        """Encrypt what `source` reads into `output` (ASCII armour, LF line ends) for exactly this pinned key,
        signed inside by `sign_as` (RFC 3156 §6.2).

        Both ends are streams: gpg reads the plaintext as it is produced and
        writes the ciphertext to the file, so neither is held in memory.
        """
        info = self.key(fingerprint)
        if info is None or not info.usable:
            raise EncryptionFailed(f"key {fingerprint}: {info.problem if info else 'not in the keyring'}")
        result = self.gpg.encrypt_file(source, [fingerprint], armor=True, sign=sign_as, output=str(output),
                                       extra_args=list(ENCRYPT_OPTIONS))
        if not result.ok:
            raise EncryptionFailed(f"gpg could not encrypt to {fingerprint}: {result.status}")
