"""Delivery reports in any order: a DSN or MDN that arrives before `relayed` is committed is never dropped.

A fast relay (Postfix on loopback) sends its `delivered` DSN about 0.1 s
after its own 250, sometimes before the worker has committed `relayed`.
Such a report is answered 451, so the relay sends it again; once `relayed`
is recorded, every report ends in the state it reports, whatever the order.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from sqlalchemy.orm import Session

from myhug.components import Components
from myhug.delivery.models import Delivery
from myhug.delivery.queue import transition
from myhug.delivery.states import DeliveryState
from myhug.directory.service import DpiCredentials
from myhug.gateway.inbound import TOO_EARLY, InboundReceiptsHandler, ReceiptIntake
from tests.conftest import Directory
from tests.helpers import accept_directly
from tests.helpers import dsn_report as _dsn
from tests.helpers import mdn_report as _mdn


def _intake(gateway: Components) -> ReceiptIntake:
    return ReceiptIntake(gateway.db, gateway.settings, dkim_dns=lambda name, timeout=5: None)


def _queued_hin_delivery(gateway: Components, directory: Directory) -> tuple[str, str]:
    doctor = directory.hin(consents=("P-1001",))
    accept_directly(gateway, doctor.address)
    with gateway.db.reading() as session:
        delivery = session.query(Delivery).one()
        return delivery.id, doctor.address


def _record_relayed(gateway: Components, delivery_id: str) -> str:
    """What the HIN route commits after the relay's 250 (`HinRouteAgent._relayed`)."""
    message_id = f"<{delivery_id}@{gateway.settings.mail.domain}>"

    def step(session: Session) -> None:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        delivery.message_id = message_id
        transition(session, delivery, DeliveryState.RELAYED, actor="gateway:hin")

    gateway.db.run(step)
    return message_id


def _state(gateway: Components, delivery_id: str) -> str:
    with gateway.db.reading() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        return delivery.state


REPORTS = {
    "delivered": lambda d, a, m: _dsn(d, a, "delivered", "2.0.0"),
    "failed": lambda d, a, m: _dsn(d, a, "failed", "5.1.1"),
    "mdn": lambda d, a, m: _mdn(m, a, a),
}
# The final state of a delivery that got these reports, whatever their order.
FINAL = {
    frozenset({"delivered"}): "delivered",
    frozenset({"failed"}): "failed",
    frozenset({"mdn"}): "read",
    frozenset({"delivered", "mdn"}): "read",
}


@pytest.mark.parametrize("kind", sorted(REPORTS))
async def test_a_report_before_relayed_is_committed_is_answered_451_then_applied_when_sent_again(
    gateway: Components, dpi: DpiCredentials, directory: Directory, kind: str
) -> None:
    delivery_id, address = _queued_hin_delivery(gateway, directory)
    message_id = f"<{delivery_id}@{gateway.settings.mail.domain}>"
    raw = REPORTS[kind](delivery_id, address, message_id)
    handler = InboundReceiptsHandler(_intake(gateway), gateway.settings)
    envelope = SimpleNamespace(original_content=raw)

    # The worker has not committed `relayed` yet: the relay is told to try again, nothing changes.
    assert await handler.handle_DATA(None, None, envelope) == TOO_EARLY  # type: ignore[arg-type]
    assert _state(gateway, delivery_id) == "queued"

    _record_relayed(gateway, delivery_id)
    reply = await handler.handle_DATA(None, None, envelope)  # type: ignore[arg-type]
    assert reply.startswith("250")
    assert _state(gateway, delivery_id) == FINAL[frozenset({kind})]


@pytest.mark.parametrize("order", [*itertools.permutations(["delivered", "mdn"]), ("mdn", "delivered", "mdn")])
async def test_dsn_and_mdn_in_any_order_end_in_the_state_they_report(
    gateway: Components, dpi: DpiCredentials, directory: Directory, order: tuple[str, ...]
) -> None:
    delivery_id, address = _queued_hin_delivery(gateway, directory)
    message_id = _record_relayed(gateway, delivery_id)
    intake = _intake(gateway)
    for kind in order:
        outcome = intake.apply(REPORTS[kind](delivery_id, address, message_id))
        assert outcome.matched and not outcome.too_early
    assert _state(gateway, delivery_id) == FINAL[frozenset(order)]
