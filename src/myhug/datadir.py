"""`myhug init`: create a data dir with configuration, keys and an up-to-date database."""

from __future__ import annotations

import logging
from pathlib import Path

from myhug import schema
from myhug.config.settings import CONFIG_FILENAME, Settings, load_settings
from myhug.crypto.envelope import Keyring
from myhug.crypto.keys import create_dkim_key, create_self_signed_tls
from myhug.db.session import make_engine
from myhug.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_TEMPLATE = """\
# myHUG gateway configuration, written by `myhug init`.
# Every key can be overridden by an environment variable MYHUG_<SECTION>__<KEY>,
# e.g. MYHUG_DATABASE__URL. See config/myhug.example.toml for every key.

# Paths below are relative to this file's folder.
data_dir = "."

[database]
# Empty: SQLite file myhug.db in the data dir. PostgreSQL:
# url = "postgresql+psycopg://myhug@/myhug"
url = ""

[smtp]
listen = "{smtp_listen}"
require_tls = true
max_message_size = 52428800
inbound_listen = "{inbound_listen}"

[web]
listen = "{web_listen}"

[relay]
# hin_smarthost = "mail.hin.ch:587"
# dpi_smarthost = "smtp.dpi.example:25"
# smarthost = "smtp.example:25"
hin_domains = ["hin.ch"]
tls = "required"

[mail]
domain = "{mail_domain}"

[sms]
provider = "file"

[hin]
auth = "header"
trusted_proxies = []
"""


def init_data_dir(data_dir: Path, *, smtp_listen: str = "127.0.0.1:2525", web_listen: str = "127.0.0.1:8025",
                  inbound_listen: str = "127.0.0.1:2526", mail_domain: str = "myhug.localhost") -> Settings:
    """Create (or complete) a data dir; never overwrites an existing key or configuration."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_file = data_dir / CONFIG_FILENAME
    if not config_file.exists():
        config_file.write_text(
            CONFIG_TEMPLATE.format(smtp_listen=smtp_listen, web_listen=web_listen, inbound_listen=inbound_listen,
                                   mail_domain=mail_domain)
        )
        log.info("wrote %s", config_file)
    settings = load_settings(config_file)
    if not settings.tls_cert_file.exists():
        create_self_signed_tls(settings.tls_cert_file, settings.tls_key_file, settings.smtp.hostname)
        log.info("created a self-signed TLS certificate %s", settings.tls_cert_file)
    if not settings.dkim_key_file.exists():
        create_dkim_key(settings.dkim_key_file)
        log.info("created a DKIM key %s", settings.dkim_key_file)
    if not settings.master_key_file.exists():
        Keyring.generate().save(settings.master_key_file)
        log.info("created the master key %s (mode 0600; back it up: without it no document can be read)", settings.master_key_file)
    upgrade_database(settings)
    database_file = settings.data_dir / "myhug.db"
    if database_file.exists():
        database_file.chmod(0o600)
    return settings


def upgrade_database(settings: Settings) -> None:
    """Apply pending migrations; a database that cannot be reached is a configuration error."""
    engine = make_engine(settings.database_url)
    try:
        schema.upgrade(engine)
    except Exception as exc:  # noqa: BLE001  (whatever the driver raises becomes one line naming the key)
        raise ConfigError(f"database.url: cannot migrate the database: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()
