"""A store that cannot take the commit answers 451 within `database.commit_timeout`, and writes nothing.

Another program held a write transaction on the SQLite file for 45 s, and
the DPI waited 45 s for its 250. Here the lock is held by a real second
connection (sqlite3, or a PostgreSQL table lock) while a document is
submitted over SMTP.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url

from myhug.components import Components
from myhug.delivery.models import Submission
from myhug.directory.service import DpiCredentials
from myhug.supervisor import start
from tests.conftest import Directory
from tests.helpers import message, send


@contextmanager
def another_program_writing(gateway: Components) -> Iterator[None]:
    """A write transaction of another program, held for the block."""
    url = make_url(gateway.db.url)
    if gateway.db.is_sqlite:
        other = sqlite3.connect(str(url.database), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    import psycopg

    with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False)) as other:
        other.execute("LOCK TABLE submission IN EXCLUSIVE MODE")  # reads go on, writes wait
        yield
        other.rollback()


async def test_a_commit_the_store_cannot_take_answers_451_in_time_and_stores_nothing(
    gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    gateway.settings.database.commit_timeout = 1
    doctor = directory.hosted(consents=("P-1001",))
    run = await start(gateway, ("smtp",))
    try:
        with another_program_writing(gateway):
            code, text = await send(run, gateway, (dpi.username, dpi.password), message([doctor.address]),
                                    [doctor.address])
            assert code == 451 and text.startswith("4.3.0"), (code, text)
        # The lock is gone, and the store takes the next document (another id: a copy of the first would be
        # answered 250 as a duplicate if the abandoned one had been written after all).
        code, text = await send(run, gateway, (dpi.username, dpi.password),
                                message([doctor.address], document="DOC-2"), [doctor.address])
        assert code == 250, text
    finally:
        await run.stop()
    with gateway.db.reading() as session:
        assert [s.document_id for s in session.query(Submission)] == ["DOC-2"]
