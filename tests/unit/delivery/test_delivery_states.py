"""The delivery state machine: one table, walked whole; only the queue module writes a delivery's state."""

from __future__ import annotations

import re
from collections import deque
from datetime import datetime
from pathlib import Path

import pytest

from myhug.delivery.models import Delivery
from myhug.delivery.queue import transition
from myhug.delivery.states import FINAL, PENDING, TRANSITIONS, DeliveryState, IllegalTransition

SRC = Path(__file__).resolve().parents[3] / "src" / "myhug"
ALL = list(DeliveryState)


def _delivery(state: DeliveryState) -> Delivery:
    return Delivery(id="D1", state=state.value, lease_owner="w", lease_until=datetime(2030, 1, 1), last_error=None)


@pytest.mark.parametrize("current", ALL, ids=str)
@pytest.mark.parametrize("to", ALL, ids=str)
def test_every_pair_is_allowed_exactly_when_the_table_says(current: DeliveryState, to: DeliveryState) -> None:
    delivery = _delivery(current)
    if to in TRANSITIONS[current]:
        transition(None, delivery, to, actor="test", record_event=False, error="why")  # type: ignore[arg-type]
        assert (delivery.state, delivery.lease_owner, delivery.lease_until, delivery.last_error) == (to, None, None, "why")
    else:
        with pytest.raises(IllegalTransition, match=f"{current.value!r} cannot become {to.value!r}"):
            transition(None, delivery, to, actor="test", record_event=False)  # type: ignore[arg-type]
        assert delivery.state == current


def test_final_states_have_no_successor_and_every_other_state_is_reachable_and_can_end() -> None:
    assert all(not TRANSITIONS[state] for state in FINAL)
    reachable, todo = {DeliveryState.QUEUED}, deque([DeliveryState.QUEUED])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert reachable == set(ALL)
    for state in set(ALL) - FINAL:
        assert TRANSITIONS[state] & FINAL, f"{state} can never end"
        assert DeliveryState.RETRACTED in TRANSITIONS[state], f"a document in {state} cannot be withdrawn"
    assert {DeliveryState.QUEUED, DeliveryState.DEFERRED} == PENDING


def test_the_database_constraint_lists_exactly_the_states() -> None:
    [check] = [c for c in Delivery.__table__.constraints if getattr(c, "name", None) == "ck_delivery_state"]
    assert set(re.findall(r"'(\w+)'", str(check.sqltext))) == {s.value for s in ALL}


# A delivery's state is written as `<something>.state = ...`, or as `state=` in an UPDATE of Delivery.
_WRITES = (
    re.compile(r"\bdeliver\w*\.state\s*=[^=]"),
    re.compile(r"\bd\.state\s*=[^=]"),
    re.compile(r"update\(Delivery\)[\s\S]{0,300}?\.values\([^)]*\bstate\s*="),
    re.compile(r"Delivery\([^)]*\bstate\s*="),
)


def test_only_the_queue_module_writes_a_deliverys_state() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if "migrations" in path.parts or path.relative_to(SRC).as_posix() == "delivery/queue.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(SRC)}: {m.group(0)[:60]!r}" for rx in _WRITES for m in rx.finditer(text)]
    assert offenders == []
    queue = (SRC / "delivery" / "queue.py").read_text()
    assert any(rx.search(queue) for rx in _WRITES)  # the patterns do find the one writer
