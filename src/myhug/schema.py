"""The database schema as a whole: every model registered, migrations applied, drift detected.

This module sits at the top of the package graph (it imports every package's
models), so the ground-floor `db` package stays free of them.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from myhug.audit import models as audit_models
from myhug.blobs import models as blob_models
from myhug.db.base import Base
from myhug.delivery import models as delivery_models
from myhug.directory import models as directory_models
from myhug.hin import models as hin_models
from myhug.mailbox import models as mailbox_models
from myhug.staffdesk import models as staffdesk_models
from myhug.websecurity import models as websecurity_models

# Imported for their side effect: each model class adds its table to `Base.metadata`.
MODELS = (audit_models, blob_models, directory_models, delivery_models, hin_models, mailbox_models, staffdesk_models,
          websecurity_models)
MIGRATIONS = Path(__file__).parent / "db" / "migrations"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


MIGRATION_LOCK = 727_271  # the PostgreSQL advisory lock key that serialises migrations


@contextmanager
def _migration_lock(engine: Engine, connection: Connection) -> Iterator[None]:
    """One process migrates at a time; the others wait, then find the schema up to date.

    PostgreSQL: a session advisory lock. SQLite: an exclusive lock on a file beside the database.
    """
    if engine.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every pending migration (idempotent; safe when several processes start at once)."""
    cfg = alembic_config(engine)
    # Without BEGIN IMMEDIATE semantics here: Alembic manages its own transaction.
    with engine.connect() as connection, _migration_lock(engine, connection):
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
        connection.commit()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config_for_scripts()).get_current_head()


def alembic_config_for_scripts() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def drift(engine: Engine) -> list[Any]:
    """Differences between the migrated schema and the models; empty when they agree."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))
