"""The hash-chained trail: appends are gapless and any edit, deletion or reordering is named."""

from __future__ import annotations

import threading

from sqlalchemy import select, text

from myhug.audit.models import AuditEvent
from myhug.audit.trail import record, verify
from myhug.components import Components


def _append(gateway: Components, n: int) -> None:
    for i in range(n):
        with gateway.db.transaction() as session:
            record(session, "login", actor=f"physician:{i}", detail={"i": i})


def test_fresh_chain_verifies(gateway: Components) -> None:
    _append(gateway, 5)
    with gateway.db.transaction() as session:
        result = verify(session)
    assert result.ok and result.checked == 5


def test_concurrent_appenders_give_gapless_sequence(gateway: Components) -> None:
    threads = [threading.Thread(target=_append, args=(gateway, 10)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with gateway.db.transaction() as session:
        seqs = list(session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))
        assert seqs == list(range(1, 41))
        assert verify(session).ok


def test_modified_event_is_named(gateway: Components) -> None:
    _append(gateway, 5)
    with gateway.db.transaction() as session:
        session.execute(text("UPDATE audit_event SET actor = 'someone-else' WHERE seq = 3"))
    with gateway.db.transaction() as session:
        result = verify(session)
    assert not result.ok and result.first_bad == 3 and "modified" in result.reason


def test_deleted_event_is_named(gateway: Components) -> None:
    _append(gateway, 5)
    with gateway.db.transaction() as session:
        session.execute(text("DELETE FROM audit_event WHERE seq = 2"))
    with gateway.db.transaction() as session:
        result = verify(session)
    assert not result.ok and result.first_bad == 2 and "missing" in result.reason


def test_deleted_tail_is_named(gateway: Components) -> None:
    _append(gateway, 5)
    with gateway.db.transaction() as session:
        session.execute(text("DELETE FROM audit_event WHERE seq >= 4"))
    with gateway.db.transaction() as session:
        result = verify(session)
    assert not result.ok and result.first_bad == 4


def test_reordered_events_are_named(gateway: Components) -> None:
    _append(gateway, 5)
    with gateway.db.transaction() as session:
        # Swap the contents of events 2 and 3, keeping their seq and hashes in place.
        a, b = (session.get(AuditEvent, s) for s in (2, 3))
        assert a is not None and b is not None
        a_actor, b_actor = a.actor, b.actor
        a_detail, b_detail = a.detail, b.detail
        a.actor, b.actor, a.detail, b.detail = b_actor, a_actor, b_detail, a_detail
    with gateway.db.transaction() as session:
        result = verify(session)
    assert not result.ok and result.first_bad == 2
