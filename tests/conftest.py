"""Shared fixtures: a fresh database per test (SQLite, or PostgreSQL when
MYHUG_TEST_DATABASE_URL is set), an initialised data dir, a running gateway on
loopback ports, and helpers to register physicians the way production does."""

from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from myhug import schema as migrate
from myhug.components import Components
from myhug.config.settings import Settings
from myhug.datadir import init_data_dir
from myhug.directory.identifiers import make_gln
from myhug.directory.models import Physician
from myhug.directory.service import (
    DpiCredentials,
    activate_with_password,
    add_dpi_client,
    hosted_address,
    register_physician,
    set_consent,
)
from myhug.supervisor import Running, start
from tests.helpers import free_port

# The processes the tests start (`myhug serve`, the CLI, the demo) import this tree's code, as the tests do,
# not whatever `pip install -e` pointed at (a second checkout of the project, say).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).resolve().parents[1] / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])

PASSWORD = "correct horse battery"
PG_URL = os.environ.get("MYHUG_TEST_DATABASE_URL", "")
BACKEND = "postgresql" if PG_URL else "sqlite"


def pytest_report_header(config: pytest.Config) -> str:
    return f"myhug database backend: {BACKEND}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that belong to one backend only are deselected, not skipped, on the other.

    Multi-process tests exist for PostgreSQL only (SQLite serves one
    process). Browser and mail-client tests (`once`) test the page or the
    peer, not the database, which the integration tests cover on both: they
    run on SQLite, and the PostgreSQL run of .ci/run saves their minutes.
    """
    other = "once" if PG_URL else "postgresql"
    kept = [item for item in items if item.get_closest_marker(other) is None]
    deselected = [item for item in items if item.get_closest_marker(other) is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A migrated template database; each test clones it (fast and isolated)."""
    if not PG_URL:
        yield None
        return
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"myhug_tpl_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path, pg_template: str | None) -> Iterator[str]:
    if pg_template is None:
        yield f"sqlite:///{tmp_path / 'myhug.db'}"
        return
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"myhug_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MYHUG_DATABASE__URL", database_url)
    settings = init_data_dir(tmp_path / "data", smtp_listen="127.0.0.1:0", web_listen="127.0.0.1:0")
    settings.queue.poll_interval = 0.05
    settings.smtp.inbound_listen = "127.0.0.1:0"
    # The HIN access gateway of the tests is a local proxy; 127.0.0.2 plays an untrusted peer.
    settings.hin.trusted_proxies = ["127.0.0.1/32"]
    return settings


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Components]:
    gw = Components.from_settings(settings)
    yield gw
    gw.close()


@pytest.fixture
async def running(gateway: Components) -> AsyncIterator[Running]:
    """SMTP + worker + web on loopback ports."""
    run = await start(gateway, ("smtp", "worker", "web"))
    yield run
    await run.stop()


@pytest.fixture
def dpi(gateway: Components) -> DpiCredentials:
    with gateway.db.transaction() as session:
        return add_dpi_client(session, "dpi-test", actor="test")


@dataclass
class Doctor:
    id: int
    gln: str
    address: str
    login: str | None
    password: str


class Directory:
    """Registers physicians and consents through the real directory operations."""

    def __init__(self, gateway: Components) -> None:
        self.gateway = gateway
        self._n = 0

    def _gln(self) -> str:
        self._n += 1
        return make_gln(f"7601999{self._n:05d}")

    def hosted(self, *, activated: bool = True, family_name: str = "Dupont", consents: tuple[str, ...] = (),
               mobile: str = "+41791234567") -> Doctor:
        with self.gateway.db.transaction() as session:
            reg = register_physician(session, gln=self._gln(), given_name="Marie", family_name=family_name,
                                     mobile=mobile, actor="test")
            physician = reg.physician
            password = reg.temporary_password or ""
            if activated:
                activate_with_password(session, physician, password, PASSWORD)
                password = PASSWORD
            for patient in consents:
                set_consent(session, self.gateway.sealer.patient_ref(patient), physician, granted=True, actor="test")
            address = hosted_address(physician, self.gateway.settings.mail.domain) or ""
            return Doctor(physician.id, physician.gln, address, physician.login, password)

    def hin(self, *, address: str = "hans.mueller@hin.ch", consents: tuple[str, ...] = ()) -> Doctor:
        """An HIN physician, activated by a first HIN login."""
        from myhug.directory.service import HinIdentity, activate_hin_identity

        with self.gateway.db.transaction() as session:
            physician = activate_hin_identity(session, HinIdentity(
                login_name=address.split("@")[0], gln=self._gln(), mail=address, given_name="Hans", surname="Müller"))
            for patient in consents:
                set_consent(session, self.gateway.sealer.patient_ref(patient), physician, granted=True, actor="test")
            return Doctor(physician.id, physician.gln, address, None, "")

    def consent(self, patient: str, doctor: Doctor, granted: bool = True) -> None:
        with self.gateway.db.transaction() as session:
            physician = session.get(Physician, doctor.id)
            assert physician is not None
            set_consent(session, self.gateway.sealer.patient_ref(patient), physician, granted=granted, actor="test")


@pytest.fixture
def directory(gateway: Components) -> Directory:
    return Directory(gateway)


class MailSink:
    """A loopback SMTP server that keeps what it receives; `reply` sets its answer to DATA."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.envelopes: list[tuple[list[str], list[str]]] = []  # (mail options, rcpt options)
        self.reply = "250 2.0.0 OK"
        self.delay = 0.0
        self.receiving = 0  # DATA phases begun
        self.peers: list[object] = []  # the client's address of each accepted message (one per connection)

    async def handle_EHLO(self, server: object, session: object, envelope: object, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # type: ignore[attr-defined]
        return [*responses[:-1], "250-DSN", responses[-1]]

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        import asyncio

        self.receiving += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.reply.startswith("250"):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))  # type: ignore[attr-defined]
            self.envelopes.append((list(envelope.mail_options), list(envelope.rcpt_options)))  # type: ignore[attr-defined]
            self.peers.append(session.peer)  # type: ignore[attr-defined]
        return self.reply


class CertificateAuthority:
    """A throwaway CA (trustme) whose certificate the gateway trusts through `relay.ca_file`."""

    def __init__(self, directory: Path) -> None:
        import trustme

        self.ca = trustme.CA()
        self.file = directory / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        return context


def start_sink(tls_context: ssl.SSLContext | None, *, offer_tls: bool = True,
               port: int | None = None, handler: MailSink | None = None) -> tuple[MailSink, object, int]:
    """A sink with DSN support (`handler`, or a plain `MailSink`); without `offer_tls` it offers no STARTTLS."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class DsnSMTP(SMTP):
        def _getparams(self, params):  # type: ignore[no-untyped-def]
            result = super()._getparams(params)
            for name in ("RET", "ENVID", "NOTIFY", "ORCPT"):
                if result is not None:
                    result.pop(name, None)
            return result

    class DsnController(Controller):
        def factory(self) -> SMTP:
            return DsnSMTP(self.handler, **self.SMTP_kwargs)

    sink = handler or MailSink()
    port = port or free_port()
    kwargs = {"tls_context": tls_context, "require_starttls": True} if offer_tls else {}
    controller = DsnController(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return sink, controller, port


@pytest.fixture
def test_ca(settings: Settings, tmp_path: Path) -> CertificateAuthority:
    ca = CertificateAuthority(tmp_path)
    settings.relay.ca_file = str(ca.file)
    return ca


def _sink_as(settings: Settings, ca: CertificateAuthority, relay_key: str) -> Iterator[MailSink]:
    """A sink on loopback, configured as the smarthost `relay.<relay_key>` of the gateway under test."""
    sink, controller, port = start_sink(ca.server_context())
    setattr(settings.relay, relay_key, f"127.0.0.1:{port}")
    yield sink
    controller.stop()  # type: ignore[attr-defined]


@pytest.fixture
def mail_sink(settings: Settings, test_ca: CertificateAuthority) -> Iterator[MailSink]:
    """Plays `relay.smarthost` (notifications)."""
    yield from _sink_as(settings, test_ca, "smarthost")


@pytest.fixture
def hin_relay(settings: Settings, test_ca: CertificateAuthority) -> Iterator[MailSink]:
    """Plays the HIN mail relay (`relay.hin_smarthost`)."""
    yield from _sink_as(settings, test_ca, "hin_smarthost")


@pytest.fixture
def dpi_mail(settings: Settings, test_ca: CertificateAuthority) -> Iterator[MailSink]:
    """Plays the DPI's mail server, which receives the receipts (`relay.dpi_smarthost`)."""
    yield from _sink_as(settings, test_ca, "dpi_smarthost")


@pytest.fixture(scope="session", autouse=True)
def _stop_gpg_agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """gpg starts an agent per GnuPG home; the tests' homes are throwaway, so are their agents.

    Each is stopped through its own home (`gpgconf --kill`): never by name, so
    no other user's or process's agent is touched on a shared machine.
    """
    yield
    from myhug.crypto.openpgp import stop_agent

    base = tmp_path_factory.getbasetemp()
    for home in {p.parent for pattern in ("pubring.kbx", "trustdb.gpg") for p in base.rglob(pattern)}:
        stop_agent(home)
