"""The delivery state machine: the states of one document for one recipient, and which may follow which.

Only `delivery.queue.transition` applies it; everything else asks the queue.

    queued ──lease──> deposited ──> read ──> expired          (hosted)
       │               relayed ──> delivered ──> read         (HIN; DSN, MDN)
       ├──> deferred (retry with backoff) ──> ... ──> expired (past the queue lifetime)
       ├──> held (cannot go out as configured; an operator or a reactivation resumes it)
       └──> failed
    any state but failed and expired ──> retracted (the DPI withdrew the document)
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    QUEUED = "queued"
    DEFERRED = "deferred"
    HELD = "held"
    DEPOSITED = "deposited"
    RELAYED = "relayed"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    EXPIRED = "expired"
    RETRACTED = "retracted"


S = DeliveryState

# Waiting for a worker: the states a delivery can be leased in.
PENDING: frozenset[DeliveryState] = frozenset({S.QUEUED, S.DEFERRED})
# Nothing follows these.
FINAL: frozenset[DeliveryState] = frozenset({S.FAILED, S.EXPIRED, S.RETRACTED})

_OUT_OF_A_WORKER = frozenset({S.DEFERRED, S.HELD, S.FAILED, S.EXPIRED, S.DEPOSITED, S.RELAYED, S.RETRACTED})

TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    S.QUEUED: _OUT_OF_A_WORKER,
    S.DEFERRED: _OUT_OF_A_WORKER | {S.QUEUED},  # a deferral may follow a deferral; `queue retry` requeues
    S.HELD: frozenset({S.QUEUED, S.FAILED, S.RETRACTED}),
    S.DEPOSITED: frozenset({S.READ, S.EXPIRED, S.RETRACTED}),
    S.RELAYED: frozenset({S.DELIVERED, S.READ, S.FAILED, S.RETRACTED}),
    S.DELIVERED: frozenset({S.READ, S.FAILED, S.RETRACTED}),
    S.READ: frozenset({S.EXPIRED, S.RETRACTED}),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
    S.RETRACTED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the table does not allow: a bug, never a user error."""


def check_transition(current: str, to: DeliveryState) -> None:
    """Raise `IllegalTransition` unless `to` may follow `current`."""
    if to not in TRANSITIONS[DeliveryState(current)]:
        raise IllegalTransition(f"a delivery in state {current!r} cannot become {to.value!r}")
