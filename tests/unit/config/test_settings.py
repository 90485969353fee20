from pathlib import Path

import pytest

from myhug.config.settings import load_settings
from myhug.errors import ConfigError


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "myhug.toml"
    path.write_text(body)
    return path


def test_defaults_match_the_spec(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, 'data_dir = "."\n'))
    assert settings.smtp.listen == "127.0.0.1:2525"
    assert settings.smtp.require_tls is True
    assert settings.smtp.max_message_size == 52428800
    assert settings.smtp.inbound_listen == "127.0.0.1:2526"
    assert settings.web.listen == "127.0.0.1:8025"
    assert settings.relay.hin_domains == ["hin.ch"]
    assert settings.relay.tls == "required"
    assert settings.mail.domain == "myhug.localhost"
    assert settings.sms.provider == "file"
    assert settings.hin.auth == "header"
    assert settings.hin.trusted_proxies == []
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'myhug.db'}"
    assert settings.sms_outbox == tmp_path.resolve() / "sms-outbox.txt"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, '[smtp]\nlisten = "127.0.0.1:2000"\n')
    monkeypatch.setenv("MYHUG_SMTP__LISTEN", "0.0.0.0:3000")
    monkeypatch.setenv("MYHUG_DATABASE__URL", "postgresql+psycopg://u:s3cret@db/myhug")
    settings = load_settings(path)
    assert settings.smtp.listen == "0.0.0.0:3000"
    assert settings.database_url == "postgresql+psycopg://u:s3cret@db/myhug"


def test_secrets_are_masked_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYHUG_DATABASE__URL", "postgresql+psycopg://u:s3cret@db/myhug")
    settings = load_settings(_write(tmp_path, ""))
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.database)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[smtp]\nlisten = "nonsense"\n', "smtp.listen"),
        ("[smtp]\nmax_message_size = -1\n", "smtp.max_message_size"),
        ('[relay]\ntls = "maybe"\n', "relay.tls"),
        ('[smtp]\nlisten_typo = "x"\n', "smtp.listen_typo"),
        ("[mailbox]\nretention_days = 5\n", "mailbox.retention_days"),
    ],
)
def test_bad_value_names_the_key_in_one_line(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, body))
    message = str(info.value)
    assert key in message
    assert "\n" not in message


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(_write(tmp_path, "[smtp\n"))
