"""The composition root: builds the gateway's parts from settings, once, with no global state.

Everything that needs wiring is built here and handed to its user; no part
reaches back for the whole (`supervisor` runs the roles, `web.create_app`
gives each HTTP handler only what it uses).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from myhug.audit.atna import AuditFeed, audit_feeds
from myhug.blobs.store import Sealer
from myhug.config.settings import Settings
from myhug.crypto.dkim import DkimSigner
from myhug.crypto.envelope import Keyring
from myhug.crypto.openpgp import OpenPgp
from myhug.db.session import Database
from myhug.delivery.agents import DeliveryAgent
from myhug.delivery.queue import DeliveryQueue
from myhug.delivery.receipts import ReceiptSender
from myhug.hin.route import HinRouteAgent
from myhug.mail.relay import MailSender, mail_sender
from myhug.mailbox.deposit import HostedMailboxAgent
from myhug.mailbox.notify import Notifier
from myhug.mailbox.retention import RetentionSweeper
from myhug.websecurity.sms import SmsProvider, sms_provider


@dataclass
class Components:
    """The parts one process needs, built from settings."""

    settings: Settings
    db: Database
    sealer: Sealer
    # Names this process in leases, so another process never mistakes its work for abandoned.
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Components:
        return cls(settings, Database(settings.database_url), Sealer(Keyring.load(settings.master_key_file)))

    def queue(self) -> DeliveryQueue:
        return DeliveryQueue(self.db, self.settings.queue, self.owner)

    def openpgp(self) -> OpenPgp:
        return OpenPgp(self.settings.gnupg_home)

    def dkim_signer(self) -> DkimSigner:
        mail = self.settings.mail
        return DkimSigner(self.settings.dkim_key_file, mail.domain, mail.dkim_selector)

    def sender(self, setting: str) -> MailSender:
        """The mail sender of `relay.<setting>` (a smarthost, or the null sender when unset)."""
        consequences = {
            "hin_smarthost": "documents for the HIN route wait in the queue",
            "dpi_smarthost": "receipts to the DPI wait in the queue",
            "smarthost": "notification e-mails are not sent",
        }
        relay = self.settings.relay
        return mail_sender(f"relay.{setting}", getattr(relay, setting), relay, consequences[setting])

    def agents(self, queue: DeliveryQueue, notifier: Notifier | None = None) -> dict[str, DeliveryAgent]:
        """One delivery agent per route; the HIN route falls back to the hosted mailbox."""
        hosted = HostedMailboxAgent(queue, on_deposit=notifier.wake if notifier else None, sealer=self.sealer)
        hin = HinRouteAgent(queue, self.sealer, self.settings, self.openpgp(), self.dkim_signer(), hosted,
                            self.sender("hin_smarthost"))
        return {hosted.route: hosted, hin.route: hin}

    def receipt_sender(self) -> ReceiptSender:
        return ReceiptSender(self.db, self.settings, self.sender("dpi_smarthost"), self.dkim_signer().sign,
                             owner=self.owner)

    def notifier(self) -> Notifier:
        return Notifier(self.db, self.settings, self.sender("smarthost"), self.dkim_signer().sign, owner=self.owner)

    def retention(self) -> RetentionSweeper:
        return RetentionSweeper(self.db, self.settings.mailbox.retention_days)

    def audit_feeds(self) -> list[AuditFeed]:
        return audit_feeds(self.db, self.settings, self.owner)

    def sms(self) -> SmsProvider:
        return sms_provider(self.settings)

    def close(self) -> None:
        self.db.dispose()
