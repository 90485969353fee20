"""Withdrawing a document sent in error (`POST /api/v1/documents/{id}/retract`).

Each delivery of the document is taken back by the agent of its route (the
hosted mailbox hides it; the HIN route sends an encrypted, signed notice if
the document already left), then moves to `retracted`, audited and so fed
back to the DPI as a receipt. A document not yet sent simply stops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.delivery.agents import DeliveryAgent
from myhug.delivery.models import Delivery, Submission
from myhug.delivery.queue import transition
from myhug.delivery.states import FINAL, DeliveryState
from myhug.directory.models import Physician


@dataclass(frozen=True)
class Retraction:
    delivery_id: str
    physician_gln: str
    previous_state: str
    notice_delivery_id: str | None


def retract_document(session: Session, agents: Mapping[str, DeliveryAgent], *, dpi_client_id: int,
                     document_id: str, actor: str, reason: str | None = None) -> list[Retraction]:
    """Withdraw every delivery of a document of this DPI client; returns what was withdrawn.

    `reason`, when the DPI gives one, is shown to the physician on the
    withdrawn line; the trail records only that one was given.
    """
    deliveries = session.scalars(
        select(Delivery).join(Submission, Submission.id == Delivery.submission_id)
        .where(Delivery.document_id == document_id, Submission.dpi_client_id == dpi_client_id)
        .with_for_update(of=Delivery)
    ).all()
    done: list[Retraction] = []
    for delivery in deliveries:
        if delivery.state in FINAL:
            continue
        physician = session.get(Physician, delivery.physician_id)
        assert physician is not None
        previous = delivery.state
        agent = agents.get(delivery.route)
        detail = agent.withdraw(session, delivery, reason) if agent is not None else {}
        transition(session, delivery, DeliveryState.RETRACTED, actor=actor,
                   detail={"previous_state": previous, "reason_given": reason is not None, **detail})
        notice = detail.get("notice_delivery")
        done.append(Retraction(delivery.id, physician.gln, previous, str(notice) if notice else None))
    return done
