"""The HIN route: PGP/MIME to the physician's key (or the HIN domain's gateway key), DKIM, TLS relay.

Patient data never leaves in clear: without a usable key, the policy
(`relay.no_key_policy`) deposits the document in the hosted mailbox instead
(default) or holds it for an operator, and the trail says why.
"""

from __future__ import annotations

import asyncio
import email.errors
import json
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.config.settings import Settings
from myhug.crypto.dkim import DkimSigner
from myhug.crypto.models import RecipientKey
from myhug.crypto.openpgp import OpenPgp
from myhug.crypto.sealing import Sealer
from myhug.directory.models import Physician
from myhug.errors import MyhugError, PermanentFailure, TemporaryFailure
from myhug.gateway.hin_message import HinContent, pgp_mime
from myhug.gateway.queue import DeliveryQueue, transition
from myhug.gateway.states import DeliveryState
from myhug.gateway.relay import DsnRequest, Smarthost, relay_message
from myhug.gateway.routing import HIN
from myhug.gateway.submission import Document
from myhug.mailbox.deposit import HostedMailboxAgent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A signed message ready to relay, or the reason why there is none."""

    raw: bytes | None = None
    recipient: str = ""
    no_key_reason: str | None = None


def choose_key(session: Session, pgp: OpenPgp, physician: Physician) -> tuple[str | None, str]:
    """The fingerprint to encrypt to: the physician's newest usable key, else the domain gateway key.

    Returns (fingerprint or None, explanation).
    """
    problems = []
    personal = session.scalars(
        select(RecipientKey).where(RecipientKey.physician_id == physician.id, RecipientKey.kind == "personal")
        .order_by(RecipientKey.imported_at.desc())
    ).all()
    for key in personal:
        info = pgp.key(key.fingerprint)
        if info is not None and info.usable:
            return key.fingerprint, "personal key"
        problems.append(f"personal key {key.fingerprint[-16:]}: {info.problem if info else 'missing from keyring'}")
    domain = (physician.hin_address or "").rpartition("@")[2]
    for key in session.scalars(select(RecipientKey).where(RecipientKey.kind == "domain", RecipientKey.address == domain)):
        info = pgp.key(key.fingerprint)
        if info is not None and info.usable:
            return key.fingerprint, "domain gateway key"
        problems.append(f"domain key {key.fingerprint[-16:]}: {info.problem if info else 'missing from keyring'}")
    if not personal:
        problems.insert(0, "no personal key")
    return None, "; ".join(problems) or "no key"


class HinRouteAgent:
    """The `DeliveryAgent` of the HIN route."""

    route = HIN

    def __init__(self, queue: DeliveryQueue, sealer: Sealer, settings: Settings, pgp: OpenPgp,
                 signer: DkimSigner, hosted: HostedMailboxAgent) -> None:
        self.queue = queue
        self.sealer = sealer
        self.settings = settings
        self.pgp = pgp
        self.signer = signer
        self.hosted = hosted

    @property
    def smarthost(self) -> Smarthost | None:
        relay = self.settings.relay
        return Smarthost.from_settings(relay.hin_smarthost, relay) if relay.hin_smarthost else None

    @property
    def sender(self) -> str:
        return f"{self.settings.mail.receipts_local_part}@{self.settings.mail.domain}"

    async def deliver(self, delivery_id: str) -> None:
        prepared = await asyncio.to_thread(self._prepare, delivery_id)
        if prepared is None:
            return  # lease lost: another worker has it
        if prepared.no_key_reason is not None:
            reason = f"no usable OpenPGP key ({prepared.no_key_reason})"
            if self.settings.relay.no_key_policy == "hosted":
                log.warning("delivery %s: %s; deposited in the hosted mailbox instead", delivery_id, reason)
                await self.hosted.deliver(delivery_id, fallback_reason=reason)
            else:
                log.warning("delivery %s: %s; held", delivery_id, reason)
                await asyncio.to_thread(self.queue.hold, delivery_id, reason)
            return
        smarthost = self.smarthost
        if smarthost is None:
            raise TemporaryFailure("relay.hin_smarthost is not configured")
        assert prepared.raw is not None
        reply = await relay_message(smarthost, prepared.raw, sender=self.sender, recipients=[prepared.recipient],
                                    dsn=DsnRequest(envid=delivery_id))
        await asyncio.to_thread(self._relayed, delivery_id, reply)

    def _prepare(self, delivery_id: str) -> Prepared | None:
        # Read in a read-only transaction, then encrypt and sign outside it: gpg
        # must not run while the database's write lock is held.
        with self.queue.db.reading() as session:
            delivery = self.queue.leased(session, delivery_id)
            if delivery is None:
                return None
            physician = session.get(Physician, delivery.physician_id)
            assert physician is not None and physician.hin_address
            fingerprint, why = choose_key(session, self.pgp, physician)
            if fingerprint is None:
                return Prepared(no_key_reason=why)
            submission = delivery.submission
            meta = json.loads(self.sealer.open_id(session, submission.metadata_blob_id))
            filenames = meta.get("filenames", [])
            documents = [
                Document(filenames[d.position] if d.position < len(filenames) else f"document-{d.position + 1}",
                         d.content_type, self.sealer.open_id(session, d.blob_id))
                for d in submission.documents
            ]
            content = HinContent(
                document_id=submission.document_id, document_type=submission.document_type,
                patient_id=meta["patient_id"], patient_name=meta.get("patient_name"),
                patient_birthdate=meta.get("patient_birthdate"), subject=meta.get("subject"), note=meta.get("note"),
                documents=documents,
            )
            recipient = physician.hin_address
        try:
            message = pgp_mime(
                content, lambda data: self.pgp.encrypt(data, fingerprint), sender=f"myHUG <{self.sender}>",
                recipient=recipient, message_id=self.message_id(delivery_id), receipts_address=self.sender,
            )
            raw = message.as_bytes()
        except MyhugError:
            raise  # gpg's own verdicts keep their kind (a key problem may be fixed by an import)
        except (ValueError, TypeError, LookupError, email.errors.MessageError) as exc:
            # The stored document cannot be expressed as this message, now or at any later attempt:
            # fail at once (with a receipt to the DPI) rather than retry it for the queue's lifetime.
            raise PermanentFailure(f"the HIN message cannot be built: {type(exc).__name__}") from None
        log.info("delivery %s: encrypted to %s (%s)", delivery_id, fingerprint[-16:], why)
        return Prepared(raw=self.signer.sign(raw), recipient=recipient)

    def message_id(self, delivery_id: str) -> str:
        """The same Message-ID at every attempt, so the receiving side can drop a duplicate."""
        return f"<{delivery_id}@{self.settings.mail.domain}>"

    def _relayed(self, delivery_id: str, reply: str) -> None:
        with self.queue.db.transaction() as session:
            delivery = self.queue.leased(session, delivery_id)
            if delivery is None:
                return
            delivery.message_id = self.message_id(delivery.id)  # MDNs are matched by it
            transition(session, delivery, DeliveryState.RELAYED, actor="gateway:hin",
                       detail={"relay_reply": reply[:200], "message_id": delivery.message_id})
