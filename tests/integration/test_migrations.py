"""Models and migrations agree, on whichever database the suite runs."""

from pathlib import Path

from sqlalchemy import inspect

from myhug import schema as migrate
from myhug.components import Components
from myhug.db.session import make_engine


def test_migrations_reach_head_and_match_the_models(gateway: Components) -> None:
    assert migrate.current_revision(gateway.db.engine) == migrate.head_revision()
    assert migrate.drift(gateway.db.engine) == []


def test_upgrade_is_idempotent(gateway: Components) -> None:
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


def test_reads_do_not_wait_for_a_writer(gateway: Components) -> None:
    """A reading transaction completes while a writer holds the lock.

    The writer only lets go after the read has finished, so a read that
    waited for the write lock could never finish: it would fail on SQLite's
    busy timeout, or block on PostgreSQL's row lock, long before the writer's
    own 60-second limit.
    """
    import threading

    from myhug.audit.models import AuditHead

    started, release = threading.Event(), threading.Event()

    def writer() -> None:
        with gateway.db.transaction() as session:
            session.get(AuditHead, 1, with_for_update=True)
            started.set()
            release.wait(60)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert started.wait(10)
        with gateway.db.reading() as session:
            assert session.get(AuditHead, 1) is not None
        assert thread.is_alive()  # the writer still held its lock while we read
    finally:
        release.set()
        thread.join()
