"""The settings reference in docs/operator.md is the one the settings model makes: it cannot drift."""

from __future__ import annotations

from pathlib import Path

from myhug.config.reference import BEGIN, END, settings_reference

ROOT = Path(__file__).resolve().parents[3]


def test_the_operators_settings_reference_is_generated_from_the_model() -> None:
    page = (ROOT / "docs" / "operator.md").read_text()
    block = page[page.index(BEGIN):page.index(END) + len(END)]
    expected = settings_reference((ROOT / "config" / "myhug.example.toml").read_text())
    assert block == expected, "run: python -m myhug.config.reference --write docs/operator.md"


def test_every_setting_is_in_the_reference_with_its_default() -> None:
    reference = settings_reference((ROOT / "config" / "myhug.example.toml").read_text())
    assert "| `commit_timeout` | `20` | `MYHUG_DATABASE__COMMIT_TIMEOUT` |" in reference
    assert "| `pre_auth_timeout` | `30` |" in reference and "| `retention_days` | `90` |" in reference
