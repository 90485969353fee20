"""The README's first command: `myhug demo` on embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end_on_embedded_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYHUG_")}
    result = subprocess.run(
        [sys.executable, "-m", "myhug.cli", "demo", "--once"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("-> 250 2.0.0 queued as") == 3
    assert "550 5.7.1 recipient" in out and "not activated" in out
    assert "not designated" in out
    assert out.count("deposited") == 2
    assert "Audit chain: OK" in out
    assert "Traceback" not in result.stderr
    assert (tmp_path / "myhug-demo" / "myhug.db").exists()
    # Running it again replaces its own data dir and succeeds again.
    again = subprocess.run([sys.executable, "-m", "myhug.cli", "demo", "--once"], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=180)
    assert again.returncode == 0, again.stderr
