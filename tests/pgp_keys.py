"""Physicians' OpenPGP keys for the tests, made with the real gpg in throwaway homes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Keypair:
    home: Path  # the physician's own GnuPG home, holding the secret key
    public: bytes  # armored public key, as the physician would hand it over

    def decrypt(self, ciphertext: bytes) -> bytes:
        # --skip-verify: reading only; `decrypt_and_verify` checks the inner signature.
        result = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--skip-verify", "--decrypt"],
                                input=ciphertext,
                                capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout

    def pin(self, public: bytes) -> None:
        """Import a correspondent's public key, as the physician pins the gateway's."""
        subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--import"], input=public, check=True,
                       capture_output=True, timeout=60)

    def decrypt_and_verify(self, ciphertext: bytes) -> tuple[bytes, str | None]:
        """The plaintext and the fingerprint of a good, valid inner signature (None when unsigned or bad)."""
        result = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--status-fd", "2", "--decrypt"],
                                input=ciphertext, capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
        status = result.stderr.decode().splitlines()
        good = any(line.startswith("[GNUPG:] GOODSIG ") for line in status)
        valid = [line.split()[2] for line in status if line.startswith("[GNUPG:] VALIDSIG ")]
        return result.stdout, valid[0] if good and valid else None


def make_keypair(home: Path, email: str, *, expire: str = "0", faked_time: str | None = None,
                 revoked: bool = False, sign_only: bool = False) -> Keypair:
    home.mkdir(parents=True, mode=0o700)
    params = home / "params"
    subkey = "" if sign_only else "Subkey-Type: ecdh\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n"
    params.write_text(
        "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\n" + subkey
        + f"Name-Real: Test Physician\nName-Email: {email}\nExpire-Date: {expire}\n%commit\n"
    )
    base = ["gpg", "--homedir", str(home), "--batch"]
    if faked_time:
        base += ["--faked-system-time", faked_time]
    subprocess.run([*base, "--gen-key", str(params)], check=True, capture_output=True, timeout=60)
    if revoked:
        revocations = list((home / "openpgp-revocs.d").glob("*.rev"))
        certificate = revocations[0].read_text().replace(":-----BEGIN", "-----BEGIN")
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import"], input=certificate.encode(),
                       check=True, capture_output=True, timeout=60)
    public = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--export", "--armor", email],
                            check=True, capture_output=True, timeout=60).stdout
    return Keypair(home, public)
