"""Settings schema and loader.

Precedence, highest first: environment (`MYHUG_SECTION__KEY`), then the TOML
file, then the defaults below. Secrets are `SecretStr`, so they print as
`**********` in reprs and logs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from myhug.errors import ConfigError

CONFIG_FILENAME = "myhug.toml"

# pydantic-settings builds its sources inside the constructor, so the file to read is passed beside it.
_TOML_FILE: ContextVar[Path | None] = ContextVar("myhug_toml_file", default=None)


def parse_hostport(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 hosts in brackets) and check the port range."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def _check_hostport(value: str | None) -> str | None:
    if value is not None and value != "":
        parse_hostport(value)
    return value or None


def _check_networks(value: list[str]) -> list[str]:
    """Each entry is an address or a CIDR network (ValueError names the bad one)."""
    for network in value:
        ipaddress.ip_network(network, strict=False)
    return value


def peer_in_networks(peer: str | None, networks: list[str]) -> bool:
    """True if a TCP peer address lies in one of `networks` (as validated above); an unparsable one never does."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


class Section(BaseModel):
    """A `[section]` of myhug.toml; unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(Section):
    # A URL may carry a password, hence SecretStr; empty means the SQLite file in the data dir.
    url: SecretStr = SecretStr("")
    # Seconds the SMTP intake waits for the store to take a submission's commit (another program holding
    # SQLite's write lock, a locked PostgreSQL table); then 451 4.3.0, and nothing of it is written.
    commit_timeout: int = Field(default=20, gt=0, le=120)


class SmtpSettings(Section):
    listen: str = "127.0.0.1:2525"
    require_tls: bool = True
    max_message_size: int = Field(default=52_428_800, gt=0)
    inbound_listen: str = "127.0.0.1:2526"
    hostname: str = "myhug.localhost"
    # Against slowloris: the whole DATA phase must end within this many seconds (50 MB at ~1 Mbit/s fits),
    # and connections are capped per peer address and in total; beyond, 421 and the connection is closed.
    data_timeout: int = Field(default=600, gt=0)
    max_connections: int = Field(default=200, gt=0)
    max_connections_per_peer: int = Field(default=50, gt=0)
    # Processes accepting on the SMTP ports (one Python process parses on one core). 0: one per core in a
    # full `myhug serve`, one with --role. The extra ones share the parent's listening sockets, and the
    # two connection caps above are shared out among them, so they stay caps for the whole gateway.
    processes: int = Field(default=0, ge=0)
    # Peers (the HIN relay's addresses, CIDR) allowed to hand DSNs and MDNs to inbound_listen; others: 550 5.7.1.
    inbound_peers: list[str] = ["127.0.0.0/8", "::1/128"]
    # Seconds a submission connection may stay without a successful AUTH; then 421 4.4.2 and closed. Silent
    # connections would otherwise hold the caps above for the whole idle timeout and lock the DPI out.
    pre_auth_timeout: int = Field(default=30, gt=0)
    # The DPI's addresses (CIDR). When set, any other peer gets 554 5.7.1 at connect and holds no slot;
    # empty: anyone may connect (the caps apply).
    submission_peers: list[str] = []

    _hp = field_validator("listen", "inbound_listen")(_check_hostport)
    _nets = field_validator("inbound_peers", "submission_peers")(_check_networks)


class WebSettings(Section):
    listen: str = "127.0.0.1:8025"
    # Base URL of the webmail as physicians reach it; used in notification links. Its host is the passkeys'
    # relying party id: passkeys work only at this address (and stay off while it is empty).
    public_url: str = ""
    session_idle_minutes: int = Field(default=30, gt=0)
    session_absolute_hours: int = Field(default=12, gt=0)
    # "Faire confiance à cet appareil": days a chosen browser skips the SMS code (never the password).
    trusted_device_days: int = Field(default=30, gt=0, le=365)
    # Peers (addresses or CIDR) whose X-Forwarded-For / X-Forwarded-Proto may set the client address:
    # a reverse proxy in front. Empty (default): such headers are never believed (SPEC §6, §7).
    forwarded_allow_ips: list[str] = []
    # Other origins the webmail's forms are posted from, besides web.public_url: the HIN access gateway
    # (e.g. "http://myhug.hin.ch") when it passes requests on under another Host.
    allowed_origins: list[str] = []

    _hp = field_validator("listen")(_check_hostport)
    _nets = field_validator("forwarded_allow_ips")(_check_networks)


class RelaySettings(Section):
    hin_smarthost: str | None = None
    dpi_smarthost: str | None = None
    smarthost: str | None = None
    hin_domains: list[str] = ["hin.ch"]
    tls: Literal["required", "none"] = "required"
    ca_file: str | None = None
    # HIN route without any usable key: deposit in the hosted mailbox, or hold for an operator.
    no_key_policy: Literal["hosted", "hold"] = "hosted"
    # For a physician with both an OpenPGP key and an S/MIME certificate: which envelope first.
    envelope_preference: list[Literal["openpgp", "smime"]] = ["openpgp", "smime"]

    _hp = field_validator("hin_smarthost", "dpi_smarthost", "smarthost")(_check_hostport)


class MailSettings(Section):
    domain: str = "myhug.localhost"
    dkim_selector: str = "myhug"
    # Local part of the address DSNs and MDNs come back to (receipts@<domain>).
    receipts_local_part: str = "receipts"
    # Put an IHE_XDM.zip and FHIR DocumentReferences inside each HIN message (needs the [xdm] OIDs); a
    # physician can turn it off in "Mon profil".
    xdm: bool = True

    @property
    def receipts_address(self) -> str:
        """The gateway's own address: sender of HIN messages and receipts, and its OpenPGP signing identity."""
        return f"{self.receipts_local_part}@{self.domain}"


class SmsSettings(Section):
    provider: Literal["file", "console", "aspsms"] = "file"
    outbox: str = ""
    # ASPSMS JSON API (https://json.aspsms.com), when provider = "aspsms".
    aspsms_url: str = "https://json.aspsms.com/SendSimpleTextSMS"
    aspsms_userkey: str = ""
    aspsms_password: SecretStr = SecretStr("")
    originator: str = "myHUG"
    # Login codes sent to one physician's phone per rolling hour (against SMS bombing).
    max_codes_per_hour: int = Field(default=10, gt=0)


class HinSettings(Section):
    auth: Literal["header", "saml", "oidc"] = "header"
    trusted_proxies: list[str] = []
    # Names of the identity headers set by the HIN access gateway.
    header_login_name: str = "X-HIN-LOGIN-NAME"
    header_gln: str = "X-HIN-EAN-NO-MEDICAL"
    header_mail: str = "X-HIN-MAIL"
    header_usertype: str = "X-HIN-USERTYPE"
    header_given_name: str = "X-HIN-GIVEN-NAME"
    header_surname: str = "X-HIN-SURNAME"

    _nets = field_validator("trusted_proxies")(_check_networks)


class QueueSettings(Section):
    """Delivery queue timings, in seconds; Postfix-like defaults."""

    poll_interval: float = Field(default=1.0, gt=0)
    # Short, and renewed by a heartbeat every third of it while the work is alive: after a crash the
    # leased work is taken again within this time (kill -9 and restart: on its way within a minute).
    lease_seconds: int = Field(default=30, ge=3)
    minimal_backoff: int = Field(default=300, gt=0)
    maximal_backoff: int = Field(default=4000, gt=0)
    maximal_lifetime: int = Field(default=5 * 24 * 3600, gt=0)
    # Scheduling niceness of a process that only delivers (`--role worker`, and the workers `myhug serve`
    # starts), and of its gpg: under a burst the intake, where a DPI waits for its 250, gets the cores first.
    worker_niceness: int = Field(default=10, ge=0, le=19)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# RFC 5612 reserves this private enterprise number for documentation; a real feed must not use it.
DOCUMENTATION_ENTERPRISE_NUMBER = 32473


_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


def _check_oid(value: str) -> str:
    if value and not _OID.match(value):
        raise ValueError(f"not an OID: {value!r} (dotted numbers, e.g. 2.16.756.5.30.1.145)")
    return value


class CryptoSettings(Section):
    """S/MIME, the second envelope of the HIN route."""

    # CA bundle physicians' S/MIME certificates must chain to; empty: the system's bundle.
    smime_ca_file: str = ""
    # Content cipher of the S/MIME envelope: AES-256-CBC (EnvelopedData, every client) or AES-256-GCM
    # (AuthEnvelopedData, RFC 5083, for the clients that read it).
    smime_cipher: Literal["aes256-cbc", "aes256-gcm"] = "aes256-cbc"


class XdmSettings(Section):
    """The OIDs the IHE XDM metadata names (patient ids, the sending system); unset: no package is made."""

    patient_id_root: str = ""
    source_id: str = ""

    _oids = field_validator("patient_id_root", "source_id")(_check_oid)


class AuditSettings(Section):
    """IHE ATNA feeds of the audit trail: TLS syslog (ITI-20, RFC 5425) and/or RESTful ATNA (FHIR)."""

    syslog: str | None = None
    syslog_ca_file: str | None = None
    syslog_format: Literal["dicom", "fhir-json"] = "dicom"
    app_name: str = "myhug"
    # With a private enterprise number (IANA), each syslog message also carries `[myhug@PEN seq hash event]`.
    enterprise_number: int | None = Field(default=None, ge=1)
    # AuditEnterpriseSiteID / AuditEvent.source.site: the hospital (e.g. its OID or GLN).
    enterprise_site_id: str | None = None
    fhir_endpoint: str | None = None  # the URL each AuditEvent is POSTed to, e.g. https://arr.example/fhir/AuditEvent
    fhir_token: SecretStr | None = None
    fhir_ca_file: str | None = None

    _hp = field_validator("syslog")(_check_hostport)

    @field_validator("enterprise_number")
    @classmethod
    def _real_enterprise_number(cls, value: int | None) -> int | None:
        if value == DOCUMENTATION_ENTERPRISE_NUMBER:
            raise ValueError("32473 is the RFC 5612 documentation number; use the hospital's IANA enterprise number")
        return value

    @field_validator("fhir_endpoint")
    @classmethod
    def _https_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return value
        url = urlsplit(value)
        if url.scheme == "https" and url.hostname:
            return value
        if url.scheme == "http" and url.hostname and _is_loopback(url.hostname):
            return value
        raise ValueError("must be an https:// URL (plain http only to a loopback address)")


class MailboxSettings(Section):
    retention_days: int = Field(default=90, ge=10, le=365)
    # Minutes between two notification e-mails to one physician in "each new document" mode: a burst of
    # documents gives one message naming how many arrived, not one per document.
    notify_min_interval: int = Field(default=10, ge=0, le=24 * 60)


class Settings(BaseSettings):
    """Every setting of the gateway. Build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="MYHUG_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    data_dir: Path = Path("myhug-data")
    database: DatabaseSettings = DatabaseSettings()
    smtp: SmtpSettings = SmtpSettings()
    web: WebSettings = WebSettings()
    relay: RelaySettings = RelaySettings()
    mail: MailSettings = MailSettings()
    sms: SmsSettings = SmsSettings()
    hin: HinSettings = HinSettings()
    queue: QueueSettings = QueueSettings()
    mailbox: MailboxSettings = MailboxSettings()
    audit: AuditSettings = AuditSettings()
    xdm: XdmSettings = XdmSettings()
    crypto: CryptoSettings = CryptoSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE.get()
        sources: list[PydanticBaseSettingsSource] = [env_settings, init_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # Derived paths: everything the gateway keeps on disk lives in the data dir.
    @property
    def database_url(self) -> str:
        url = self.database.url.get_secret_value()
        return url or f"sqlite:///{(self.data_dir / 'myhug.db').resolve()}"

    @property
    def sms_outbox(self) -> Path:
        return Path(self.sms.outbox) if self.sms.outbox else self.data_dir / "sms-outbox.txt"

    @property
    def tls_cert_file(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    @property
    def tls_key_file(self) -> Path:
        return self.data_dir / "tls" / "key.pem"

    @property
    def dkim_key_file(self) -> Path:
        return self.data_dir / "dkim" / "private.pem"

    @property
    def smime_dir(self) -> Path:
        """The gateway's S/MIME signing certificate and key (`crypto.smime`)."""
        return self.data_dir / "smime"

    @property
    def gnupg_home(self) -> Path:
        return self.data_dir / "gnupg"

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "keys" / "master.json"


def default_data_dir() -> Path:
    """`$MYHUG_HOME` if set, else `./myhug-data`."""
    return Path(os.environ.get("MYHUG_HOME") or "myhug-data")


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    return f"invalid setting {key}: {first['msg']}"


def load_settings(config_file: Path | None = None, data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Read `myhug.toml` (from `config_file`, or from the data dir) plus the environment.

    Raises `ConfigError` with a one-line message naming the offending key.
    """
    if config_file is None:
        base = data_dir or Path(os.environ.get("MYHUG_DATA_DIR") or default_data_dir())
        candidate = base / CONFIG_FILENAME
        config_file = candidate if candidate.exists() else None
    elif not config_file.exists():
        raise ConfigError(f"configuration file not found: {config_file}")
    token = _TOML_FILE.set(config_file)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except (ValueError, OSError) as exc:  # TOML syntax errors and unreadable files
        raise ConfigError(f"cannot read configuration {config_file}: {exc}") from None
    finally:
        _TOML_FILE.reset(token)
    # A relative data_dir in the file is relative to the file, not to the cwd.
    if config_file is not None and "data_dir" not in overrides and not os.environ.get("MYHUG_DATA_DIR") \
            and not settings.data_dir.is_absolute():
        settings.data_dir = (config_file.parent / settings.data_dir).resolve()
    if data_dir is not None:
        settings.data_dir = data_dir
    return settings
