"""The README's first command: `myhug demo` on embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from myhug.crypto.openpgp import stop_agent


def test_demo_runs_end_to_end_on_embedded_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYHUG_")}
    result = subprocess.run(
        [sys.executable, "-m", "myhug.cli", "demo", "--once"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("-> 250 2.0.0 queued as") == 4
    assert "550 5.7.1 recipient" in out and "not activated" in out
    assert "not designated" in out
    assert out.count("deposited") == 2
    assert "DOC-1001-B   hin     relayed    -> hans.mueller@hin.ch" in out
    assert "Audit chain: OK" in out
    import re

    receipts = int(re.search(r"The DPI received (\d+) receipts", out).group(1))  # type: ignore[union-attr]
    assert receipts >= 5  # accepted x3, deposited x2, relayed
    # The printed command decrypts Dr Müller's message, as his mail client would.
    command = re.search(r"     (gpg --homedir \S+ --decrypt \S+)", out).group(1)  # type: ignore[union-attr]
    try:
        decrypted = subprocess.run([*command.split()[:3], "--batch", *command.split()[3:]], capture_output=True,
                                   timeout=60)
    finally:
        stop_agent(Path(command.split()[2]))  # the decryption started the physician's agent: this test's to stop
    assert decrypted.returncode == 0 and "Patient Démo".encode() in decrypted.stdout
    assert b'Good signature from "myHUG gateway' in decrypted.stderr  # signed inside, by the pinned gateway key
    assert "Traceback" not in result.stderr
    assert (tmp_path / "myhug-demo" / "myhug.db").exists()
    # Running it again replaces its own data dir and succeeds again.
    again = subprocess.run([sys.executable, "-m", "myhug.cli", "demo", "--once"], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=180)
    assert again.returncode == 0, again.stderr
