"""Models and migrations agree, on whichever database the suite runs."""

from pathlib import Path

from sqlalchemy import inspect

from myhug.db import migrate
from myhug.db.session import make_engine
from myhug.runtime import Gateway


def test_migrations_reach_head_and_match_the_models(gateway: Gateway) -> None:
    assert migrate.current_revision(gateway.db.engine) == migrate.head_revision()
    assert migrate.drift(gateway.db.engine) == []


def test_upgrade_is_idempotent(gateway: Gateway) -> None:
    migrate.upgrade(gateway.db.engine)
    tables = set(inspect(gateway.db.engine).get_table_names())
    assert {"physician", "consent", "dpi_client", "submission", "delivery", "sealed_blob", "audit_event"} <= tables


def test_sqlite_engine_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
