"""Receipts are an outbox of the trail: one receipt row per document event, made once, in trail order."""

from __future__ import annotations

from sqlalchemy import select

from myhug.audit.models import TrailCursor
from myhug.audit.trail import record
from myhug.components import Components
from myhug.gateway.models import Receipt
from myhug.gateway.receipts import CURSOR, collect_receipts


def test_each_document_event_gets_exactly_one_receipt_and_account_events_none(gateway: Components) -> None:
    with gateway.db.transaction() as session:
        first = record(session, "accepted", actor="t", document_id="D", submission_id="S1")
        record(session, "login", actor="t", physician_gln="7601000000000")
        record(session, "refused", actor="t", document_id="D", submission_id="S1")  # no receipt for a refusal
        last = record(session, "deposited", actor="t", document_id="D", submission_id="S1")
        assert session.scalars(select(Receipt)).all() == []  # recording owes, it does not send
    with gateway.db.transaction() as session:
        assert collect_receipts(session, limit=2) == (2, 1)  # a batch may end anywhere
    with gateway.db.transaction() as session:
        assert collect_receipts(session) == (2, 1)
        assert collect_receipts(session) == (0, 0)  # caught up: nothing made twice
    with gateway.db.reading() as session:
        rows = session.scalars(select(Receipt).order_by(Receipt.id)).all()
        assert [r.audit_seq for r in rows] == [first.seq, last.seq]
        assert {r.state for r in rows} == {"pending"}
        cursor = session.get(TrailCursor, CURSOR)
        assert cursor is not None and cursor.last_seq == last.seq


def test_a_collection_rolled_back_makes_nothing_and_is_taken_again(gateway: Components) -> None:
    with gateway.db.transaction() as session:
        record(session, "accepted", actor="t", document_id="D", submission_id="S1")

    class Crash(Exception):
        pass

    try:
        with gateway.db.transaction() as session:
            assert collect_receipts(session) == (1, 1)
            raise Crash
    except Crash:
        pass
    with gateway.db.transaction() as session:
        assert collect_receipts(session) == (1, 1)
    with gateway.db.reading() as session:
        assert len(session.scalars(select(Receipt)).all()) == 1
