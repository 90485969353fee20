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
from io import RawIOBase
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.blobs.store import Sealer
from myhug.config.settings import Settings, parse_hostport
from myhug.crypto import smime
from myhug.crypto.dkim import DkimSigner
from myhug.crypto.openpgp import OpenPgp
from myhug.crypto.smime import CertificateInfo
from myhug.db.base import new_id, utcnow
from myhug.delivery.agents import DeliveryAgent
from myhug.delivery.document import Document
from myhug.delivery.models import (
    RETRACTION_SUFFIX,
    RETRACTION_TYPE,
    Delivery,
    Submission,
    SubmissionDocument,
)
from myhug.delivery.queue import DeliveryQueue, create_delivery, transition
from myhug.delivery.routing import HIN
from myhug.delivery.states import DeliveryState
from myhug.directory.models import Physician
from myhug.errors import MyhugError, PermanentFailure
from myhug.hin.keys import choose_certificate, local_key
from myhug.hin.message import HinContent, pgp_mime, smime_message
from myhug.hin.models import RecipientKey
from myhug.instruments import CRYPTO_SECONDS
from myhug.mail.mime import SpooledMessage
from myhug.mail.relay import DsnRequest, MailSender
from myhug.xdm.fhir import bundle_json
from myhug.xdm.metadata import Origin, PackageFile, package_of
from myhug.xdm.package import xdm_zip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A signed message ready to relay (its owner closes it), or the reason why there is none."""

    message: SpooledMessage | None = None
    recipient: str = ""
    no_key_reason: str | None = None


def choose_key(session: Session, pgp: OpenPgp, physician_id: int, hin_address: str) -> tuple[str | None, str]:
    """The fingerprint to encrypt to: the physician's newest usable key, else the domain gateway key.

    Returns (fingerprint or None, explanation).
    """
    problems = []
    personal = session.scalars(
        select(RecipientKey.fingerprint).where(RecipientKey.physician_id == physician_id, RecipientKey.kind == "personal",
                                               RecipientKey.envelope == "openpgp")
        .order_by(RecipientKey.imported_at.desc())
    ).all()
    for fingerprint in personal:
        info = local_key(session, pgp, fingerprint)
        if info is not None and info.usable:
            return fingerprint, "personal key"
        problems.append(f"personal key {fingerprint[-16:]}: {info.problem if info else 'missing from keyring'}")
    domain = hin_address.rpartition("@")[2]
    for fingerprint in session.scalars(select(RecipientKey.fingerprint)
                                       .where(RecipientKey.kind == "domain", RecipientKey.address == domain,
                                              RecipientKey.envelope == "openpgp")):
        info = local_key(session, pgp, fingerprint)
        if info is not None and info.usable:
            return fingerprint, "domain gateway key"
        problems.append(f"domain key {fingerprint[-16:]}: {info.problem if info else 'missing from keyring'}")
    if not personal:
        problems.insert(0, "no personal key")
    return None, "; ".join(problems) or "no key"


class HinRouteAgent:
    """The `DeliveryAgent` of the HIN route."""

    route = HIN

    def __init__(self, queue: DeliveryQueue, sealer: Sealer, settings: Settings, pgp: OpenPgp,
                 signer: DkimSigner, fallback: DeliveryAgent, relay: MailSender) -> None:
        self.queue = queue
        self.sealer = sealer
        self.settings = settings
        self.pgp = pgp
        self.signer = signer
        self.fallback = fallback  # the hosted mailbox, where `no_key_policy` sends what cannot be encrypted
        self.relay = relay  # relay.hin_smarthost
        self._ca_bundle: list[x509.Certificate] | None = None
        self._smime_identity: smime.GatewayIdentity | None = None

    @property
    def relay_host(self) -> str | None:
        """The HIN relay's host name, the destination's network address in the audit trail."""
        hostport = self.settings.relay.hin_smarthost
        return parse_hostport(hostport)[0] if hostport else None

    @property
    def sender(self) -> str:
        return self.settings.mail.receipts_address

    async def deliver(self, delivery_id: str, fallback_reason: str | None = None) -> None:
        prepared = await asyncio.to_thread(self._prepare, delivery_id)
        if prepared is None:
            return  # lease lost: another worker has it
        if prepared.no_key_reason is not None:
            reason = f"no usable OpenPGP key or S/MIME certificate ({prepared.no_key_reason})"
            if self.settings.relay.no_key_policy == "hosted":
                log.warning("delivery %s: %s; deposited in the hosted mailbox instead", delivery_id, reason)
                await self.fallback.deliver(delivery_id, fallback_reason=reason)
            else:
                log.warning("delivery %s: %s; held", delivery_id, reason)
                await asyncio.to_thread(self.queue.hold, delivery_id, reason)
            return
        assert prepared.message is not None
        try:
            reply = await self.relay.send(prepared.message, sender=self.sender, recipients=[prepared.recipient],
                                          dsn=DsnRequest(envid=delivery_id))
        finally:
            prepared.message.close()
        await asyncio.to_thread(self._relayed, delivery_id, reply)

    def _cas(self) -> list[x509.Certificate]:
        """The CAs physicians' certificates chain to, read once per agent (a new bundle needs a restart)."""
        if self._ca_bundle is None:
            self._ca_bundle = smime.ca_bundle(self.settings.crypto.smime_ca_file or None)
        return self._ca_bundle

    def _identity(self) -> smime.GatewayIdentity:
        """The gateway's S/MIME signing certificate (made at first use if `myhug init` predates it)."""
        if self._smime_identity is None:
            self._smime_identity = smime.gateway_identity(self.settings.smime_dir, self.sender)
        return self._smime_identity

    def _xdm(self, meta: dict[str, Any], row: Any, documents: list[Document]) -> tuple[bytes, bytes] | None:
        """The package for practice software, when the hospital configured its OIDs and the physician wants it."""
        origin = Origin.of(self.settings.xdm)
        if origin is None or not self.settings.mail.xdm or not (row.preferences or {}).get("xdm", True):
            return None
        package = package_of(meta, document_id=row.document_id, document_type=row.document_type,
                             created=row.received_at,
                             files=[PackageFile(d.filename, d.content_type, d.data) for d in documents])
        return xdm_zip(package, origin), bundle_json(package, origin)

    def _prepare(self, delivery_id: str) -> Prepared | None:
        # Read in a read-only transaction, then encrypt and sign outside it: gpg
        # must not run while the database's write lock is held.
        # Plain rows in four statements: loading the delivery, physician, submission, documents and blobs as
        # ORM objects one by one (seven statements) was a fifth of a worker's own CPU per HIN document.
        with self.queue.db.reading() as session:
            row = session.execute(
                select(Delivery.lease_owner, Delivery.state, Delivery.physician_id, Physician.hin_address,
                       Physician.preferences, Submission.id, Submission.document_id, Submission.document_type,
                       Submission.metadata_blob_id, Submission.received_at)
                .join(Physician, Physician.id == Delivery.physician_id)
                .join(Submission, Submission.id == Delivery.submission_id)
                .where(Delivery.id == delivery_id)
            ).one_or_none()
            if row is None or not self.queue.still_mine(row):
                return None  # lease lost: another worker has it
            recipient = row.hin_address
            assert recipient
            # The envelopes in the operator's order (`relay.envelope_preference`): the first one usable wins.
            fingerprint: str | None = None
            certificate: CertificateInfo | None = None
            problems: list[str] = []
            for kind in self.settings.relay.envelope_preference:
                if kind == "openpgp":
                    fingerprint, why = choose_key(session, self.pgp, row.physician_id, recipient)
                else:
                    certificate, why = choose_certificate(session, row.physician_id, recipient, self._cas())
                if fingerprint is not None or certificate is not None:
                    break
                problems.append(why)
            else:
                return Prepared(no_key_reason="; ".join(problems))
            parts = session.execute(
                select(SubmissionDocument.position, SubmissionDocument.content_type, SubmissionDocument.blob_id)
                .where(SubmissionDocument.submission_id == row.id).order_by(SubmissionDocument.position)
            ).all()
            plain = self.sealer.open_ids(session, [row.metadata_blob_id, *(part.blob_id for part in parts)])
        meta = json.loads(plain[row.metadata_blob_id])
        filenames = meta.get("filenames", [])
        documents = [
            Document(filenames[part.position] if part.position < len(filenames) else f"document-{part.position + 1}",
                     part.content_type, plain[part.blob_id])
            for part in parts
        ]
        del plain
        content = HinContent(
            document_id=row.document_id, document_type=row.document_type,
            patient_id=meta["patient_id"], patient_name=meta.get("patient_name"),
            patient_birthdate=meta.get("patient_birthdate"), subject=meta.get("subject"), note=meta.get("note"),
            documents=documents, author=meta.get("author"), department=meta.get("department"),
            xdm=self._xdm(meta, row, documents),
        )

        def encrypt(source: BinaryIO | RawIOBase, output: Path) -> None:
            assert fingerprint is not None
            with CRYPTO_SECONDS.labels("gpg").time():
                self.pgp.encrypt(source, output, fingerprint, sign_as=self.pgp.signing_key(self.sender))

        def seal(inner: bytes) -> bytes:
            assert certificate is not None
            with CRYPTO_SECONDS.labels("smime").time():
                return smime.envelope(smime.sign(inner, self._identity()), certificate.certificate,
                                      self.settings.crypto.smime_cipher)

        try:
            if certificate is not None:
                gcm = self.settings.crypto.smime_cipher == "aes256-gcm"
                message = smime_message(
                    content, seal, sender=f"myHUG <{self.sender}>", recipient=recipient,
                    message_id=self.message_id(delivery_id), receipts_address=self.sender,
                    smime_type="authEnveloped-data" if gcm else "enveloped-data")
            else:
                message = pgp_mime(
                    content, encrypt,
                    sender=f"myHUG <{self.sender}>",
                    recipient=recipient, message_id=self.message_id(delivery_id), receipts_address=self.sender,
                )
        except MyhugError:
            raise  # gpg's own verdicts keep their kind (a key problem may be fixed by an import)
        except (ValueError, TypeError, LookupError, email.errors.MessageError) as exc:
            # The stored document cannot be expressed as this message, now or at any later attempt:
            # fail at once (with a receipt to the DPI) rather than retry it for the queue's lifetime.
            raise PermanentFailure(f"the HIN message cannot be built: {type(exc).__name__}") from None
        pinned = fingerprint[-16:] if fingerprint else f"S/MIME {certificate.fingerprint[:16]}" if certificate else ""
        log.info("delivery %s: encrypted to %s (%s)", delivery_id, pinned, why)
        try:
            with CRYPTO_SECONDS.labels("dkim").time():
                message.prepend(self.signer.signature(message.head, message.body_chunks()))
        except BaseException:
            message.close()
            raise
        return Prepared(message=message, recipient=recipient)

    def withdraw(self, session: Session, delivery: Delivery, reason: str | None = None) -> dict[str, object]:
        """A document already sent cannot be recalled from a mail client: an encrypted notice follows it."""
        if delivery.state not in (DeliveryState.RELAYED, DeliveryState.DELIVERED, DeliveryState.READ):
            return {}  # not sent yet: stopping it is enough
        original = delivery.submission
        physician = session.get(Physician, delivery.physician_id)
        assert physician is not None
        meta = json.loads(self.sealer.open_id(session, original.metadata_blob_id))
        meta["note"] = (
            f"Le document {original.document_id} qui vous a été envoyé le {original.received_at:%d.%m.%Y} "
            "a été retiré par les HUG : il vous a été adressé par erreur. Merci de ne pas en tenir compte "
            "et de le supprimer.\n"
            + (f"Motif indiqué par les HUG : {reason}\n" if reason else "")
        )
        meta["subject"] = f"Retrait du document {original.document_id}"
        meta["filenames"] = []
        meta["original_filenames"] = []
        notice = Submission(
            id=new_id(), dpi_client_id=original.dpi_client_id, envelope_sender=original.envelope_sender,
            document_id=original.document_id + RETRACTION_SUFFIX, document_type=RETRACTION_TYPE,
            patient_ref=original.patient_ref,
            metadata_blob_id=self.sealer.seal(session, json.dumps(meta, ensure_ascii=False).encode()).id,
            received_at=utcnow(),
        )
        session.add(notice)
        # No "accepted" event: the "retracted" event of the original names this notice's delivery.
        notice_delivery = create_delivery(session, notice, physician, route=HIN,
                                          recipient_address=delivery.recipient_address, actor="gateway:retraction",
                                          event=None)
        return {"notice_delivery": notice_delivery.id}

    def message_id(self, delivery_id: str) -> str:
        """The same Message-ID at every attempt, so the receiving side can drop a duplicate."""
        return f"<{delivery_id}@{self.settings.mail.domain}>"

    def _relayed(self, delivery_id: str, reply: str) -> None:
        def step(session: Session) -> None:
            delivery = self.queue.leased(session, delivery_id)
            if delivery is None:
                return
            delivery.message_id = self.message_id(delivery.id)  # MDNs are matched by it
            transition(session, delivery, DeliveryState.RELAYED, actor="gateway:hin",
                       detail={"relay_reply": reply[:200], "message_id": delivery.message_id,
                               "destination_host": self.relay_host})

        self.queue.record_outcome(step)
