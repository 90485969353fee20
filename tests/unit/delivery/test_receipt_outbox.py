"""Receipts are an outbox of the trail: one receipt row per document event, made once, in trail order."""

from __future__ import annotations

from sqlalchemy import select

from myhug.audit.models import TrailCursor
from myhug.audit.trail import record
from myhug.components import Components
from myhug.db.base import utcnow
from myhug.delivery.models import Receipt
from myhug.delivery.receipts import CURSOR, collect_receipts
from myhug.directory.service import DpiCredentials
from tests.conftest import Directory


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


class FlakyRelay:
    """A `MailSender` that refuses while `down`, and keeps what it took."""

    def __init__(self) -> None:
        self.down = True
        self.sent: list[bytes] = []

    async def send(self, message: object, *, sender: str, recipients: list[str], dsn: object = None) -> str:
        if self.down:
            from myhug.errors import TemporaryFailure

            raise TemporaryFailure("DPI relay down")
        assert isinstance(message, bytes)
        self.sent.append(message)
        return "250 ok"


async def test_receipts_of_one_document_leave_in_trail_order_even_after_the_relay_failed(
    gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    import email

    from sqlalchemy import update

    from myhug.delivery.receipts import ReceiptSender
    from tests.helpers import accept_directly

    doctor = directory.hosted(consents=("P-1001",))
    accepted = accept_directly(gateway, doctor.address)
    with gateway.db.transaction() as session:
        for name in ("deferred", "deposited"):
            record(session, name, actor="t", document_id="DOC-1", submission_id=accepted.submission_id)
    relay = FlakyRelay()
    sender = ReceiptSender(gateway.db, gateway.settings, relay, lambda raw: raw)
    assert await sender.run_once() == 0  # "accepted" failed; the later two were not even tried
    with gateway.db.reading() as session:
        assert [(r.state, r.attempts) for r in session.scalars(select(Receipt).order_by(Receipt.audit_seq))] \
            == [("pending", 1), ("pending", 0), ("pending", 0)]
    relay.down = False
    with gateway.db.transaction() as session:  # the backoff has passed
        session.execute(update(Receipt).values(next_attempt_at=utcnow()))
    while await sender.run_once():
        pass
    events = [email.message_from_bytes(raw) for raw in relay.sent]
    assert [m["X-MyHUG-Event"] for m in events] == ["accepted", "deferred", "deposited"]
    sequences = [int(m["X-MyHUG-Sequence"]) for m in events]
    assert sequences == sorted(sequences)
    assert [m["Message-ID"] for m in events] == [f"<receipt-{seq}@myhug.localhost>" for seq in sequences]
