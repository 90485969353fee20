"""The annotated example configuration stays loadable and complete."""

import tomllib
from pathlib import Path

from myhug.config.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "myhug.example.toml"


def test_example_config_loads_and_lists_every_key() -> None:
    load_settings(EXAMPLE)
    example = tomllib.loads(EXAMPLE.read_text())
    for section, model in Settings.model_fields.items():
        if section == "data_dir":
            continue
        assert section in example, section
        documented = set(example[section]) | {"hin_smarthost", "dpi_smarthost", "smarthost", "ca_file",
                                               "syslog", "syslog_ca_file", "enterprise_number", "enterprise_site_id",
                                               "fhir_endpoint", "fhir_token", "fhir_ca_file"}  # commented-out examples
        assert set(model.annotation.model_fields) <= documented, section  # type: ignore[union-attr]
