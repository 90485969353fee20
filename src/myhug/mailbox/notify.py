"""E-mail notifications of new hosted documents: a count and a link, never patient data."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.background import BackgroundLoop, heartbeat
from myhug.config.settings import Settings
from myhug.db.base import utcnow
from myhug.db.leases import Leases
from myhug.db.session import Database
from myhug.directory.delegation import assistants_to_notify
from myhug.directory.models import Physician
from myhug.errors import PermanentFailure, TemporaryFailure
from myhug.mail.relay import MailSender
from myhug.mailbox.models import MailboxItem
from myhug.websecurity.pages import SWISS_TIME

log = logging.getLogger(__name__)

DIGEST_INTERVAL = timedelta(hours=24)
RETRY_AFTER = timedelta(minutes=1)  # a notification the relay could not take now


@dataclass(frozen=True)
class DueNotification:
    physician_id: int
    gln: str
    email: str
    mode: str
    item_ids: list[int]
    copies: list[str] = field(default_factory=list)  # linked assistants the physician chose to notify too


def notification_message(*, count: int, to: str, mail_domain: str, webmail_url: str) -> EmailMessage:
    """The notification: how many documents wait, and where. Nothing about whom they concern."""
    plural = count > 1
    message = EmailMessage()
    message["From"] = f"myHUG <noreply@{mail_domain}>"
    message["To"] = to
    message["Subject"] = "myHUG : nouveaux documents à disposition" if plural else "myHUG : nouveau document à disposition"
    message["Date"] = format_datetime(datetime.now(SWISS_TIME))  # "+0100": Geneva's offset, not "-0000"
    message["Message-ID"] = make_msgid(domain=mail_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        "Bonjour,\n\n"
        + (f"{count} nouveaux documents vous attendent" if plural else "Un nouveau document vous attend")
        + " dans votre messagerie sécurisée myHUG.\n\n"
        f"Pour {'les' if plural else 'le'} consulter, connectez-vous : {webmail_url.rstrip('/')}/documents\n\n"
        "Ce message ne contient aucune donnée médicale. Ne répondez pas à ce message.\n\n"
        "Hôpitaux universitaires de Genève — service de cybersanté & télémédecine\n"
    )
    return message


def skip_waiting(session: Session, physician_id: int) -> int:
    """Notifications just turned on: what already waits is not announced (the physician knows it is there).

    Only documents that arrive from now on count, so the first message says
    "1 nouveau document", not the whole unread backlog. Returns how many were skipped.
    """
    result = session.execute(
        update(MailboxItem).where(MailboxItem.physician_id == physician_id, MailboxItem.notified_at.is_(None))
        .values(notified_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


class Notifier(BackgroundLoop):
    """Finds documents that are due a notification and mails their owners through `relay`.

    Several worker processes share the work through the lease helper: each
    document is claimed by one process (SKIP LOCKED), so it is notified and
    recorded once, whatever the number of processes.
    """

    def __init__(self, db: Database, settings: Settings, relay: MailSender, sign: Callable[[bytes], bytes],
                 owner: str = "notifier") -> None:
        super().__init__()
        self.db = db
        self.settings = settings
        self.relay = relay  # relay.smarthost
        self.sign = sign  # DKIM, as the receipts: a notification that lands in spam is no notification
        unnotified = MailboxItem.notified_at.is_(None) & MailboxItem.read_at.is_(None) \
            & (MailboxItem.state == "available")
        self.leases = Leases(MailboxItem, unnotified, owner, settings.queue.lease_seconds)

    @property
    def webmail_url(self) -> str:
        return self.settings.web.public_url or f"http://{self.settings.web.listen}"

    def claim(self, limit: int = 200) -> list[DueNotification]:
        """Lease the documents due a notification now, grouped by physician (one message each)."""
        now = utcnow()
        # `digest_sent_at` is when the physician's last notification went out, in either mode: "each" waits
        # `mailbox.notify_min_interval` after it (a burst gives one message with the count), "digest" a day.
        last = Physician.digest_sent_at
        each_after = now - timedelta(minutes=self.settings.mailbox.notify_min_interval)
        wanting = select(Physician.id).where(
            Physician.notification_mode.in_(("each", "digest")), Physician.email.is_not(None),
            Physician.status == "activated",
            or_(last.is_(None),
                and_(Physician.notification_mode == "each", last <= each_after),
                and_(Physician.notification_mode == "digest", last < now - DIGEST_INTERVAL)),
        )

        def step(session: Session) -> list[DueNotification]:
            ids = self.leases.claim(session, limit, [MailboxItem.id], where=MailboxItem.physician_id.in_(wanting))
            grouped: dict[int, DueNotification] = {}
            for item_id, physician in session.execute(
                select(MailboxItem.id, Physician).join(Physician, Physician.id == MailboxItem.physician_id)
                .where(MailboxItem.id.in_(ids)).order_by(MailboxItem.id)
            ).all():
                entry = grouped.setdefault(physician.id, DueNotification(
                    physician.id, physician.gln, physician.email or "", physician.notification_mode, []))
                entry.item_ids.append(item_id)
            for entry in grouped.values():
                entry.copies.extend(a.email for a in assistants_to_notify(session, entry.physician_id) if a.email)
            return list(grouped.values())

        with self.db.reading() as session:  # an idle mailbox is polled without the write lock
            if session.scalar(select(MailboxItem.id).where(self.leases.due()).limit(1)) is None:
                return []
        return self.db.run(step)

    def _mark(self, due: DueNotification, outcome: str, reason: str | None = None) -> None:
        now = utcnow()

        def step(session: Session) -> None:
            for item in session.scalars(select(MailboxItem).where(MailboxItem.id.in_(due.item_ids),
                                                                   MailboxItem.lease_owner == self.leases.owner)):
                item.notified_at = now
                item.lease_owner, item.lease_until = None, None
                record(
                    session, "notified", actor="gateway:notifier", outcome=outcome,
                    document_id=item.submission.document_id, submission_id=item.submission_id,
                    delivery_id=item.delivery_id, physician_gln=due.gln,
                    detail={"mode": due.mode, "documents_in_message": len(due.item_ids),
                            **({"reason": reason} if reason else {})},
                )
            physician = session.get(Physician, due.physician_id)
            assert physician is not None
            physician.digest_sent_at = now  # the next one waits (notify_min_interval, or a day for a digest)

        self.db.run(step)

    def _later(self, due: DueNotification, pause: timedelta = RETRY_AFTER) -> None:
        """Give the documents back, to be tried again after `pause` (a temporary failure), or at once (none)."""
        retry_at = utcnow() + pause

        def step(session: Session) -> None:
            session.execute(update(MailboxItem).where(MailboxItem.id.in_(due.item_ids),
                                                      MailboxItem.lease_owner == self.leases.owner)
                            .values(lease_owner=None, lease_until=None, next_attempt_at=retry_at))

        self.db.run(step)

    def _still_wanted(self, due: DueNotification) -> bool:
        """Right before sending: is this still the physician's mode and address?"""
        with self.db.reading() as session:
            row = session.execute(select(Physician.notification_mode, Physician.email, Physician.status)
                                  .where(Physician.id == due.physician_id)).one_or_none()
        return row is not None and tuple(row) == (due.mode, due.email, "activated")

    def _renew(self) -> int:
        return self.db.run(self.leases.renew)

    async def run_once(self) -> int:
        """Send what is due; returns how many notifications went out."""
        sent = 0
        claimed = await asyncio.to_thread(self.claim)
        if not claimed:
            return 0
        async with heartbeat(self._renew, self.settings.queue.lease_seconds / 3, "notifier"):
            for due in claimed:
                if not await asyncio.to_thread(self._still_wanted, due):
                    # The physician changed the mode since the claim (e.g. to the daily digest): not one more
                    # immediate message. The documents go back, for the mode chosen now.
                    await asyncio.to_thread(self._later, due, timedelta(0))
                    continue
                message = notification_message(count=len(due.item_ids), to=due.email,
                                               mail_domain=self.settings.mail.domain, webmail_url=self.webmail_url)
                try:
                    # The assistants get the same message (it names no patient), as blind copies.
                    await self.relay.send(self.sign(message.as_bytes()), sender=f"bounces@{self.settings.mail.domain}",
                                          recipients=[due.email, *due.copies])
                except TemporaryFailure as exc:
                    log.info("notification to physician %s deferred: %s", due.gln, exc)
                    await asyncio.to_thread(self._later, due)
                    continue
                except PermanentFailure as exc:
                    log.warning("notification to physician %s failed: %s", due.gln, exc)
                    await asyncio.to_thread(self._mark, due, "failure", str(exc))
                    continue
                await asyncio.to_thread(self._mark, due, "success")
                sent += 1
        return sent
