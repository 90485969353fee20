"""The SMTP submission edge (aiosmtpd): STARTTLS, AUTH, parse, check, store, then answer.

It never talks to the outside world before replying. Database work runs in
worker threads so that one slow commit does not stall other sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from myhug.audit.trail import savepoint as trail_savepoint
from myhug.blobs.store import Sealer
from myhug.config.settings import Settings
from myhug.db.group_commit import CommitTimeout, GroupCommit
from myhug.db.session import Database
from myhug.directory.identifiers import InvalidIdentifier, normalize_address
from myhug.directory.service import authenticate_dpi_client
from myhug.gateway.intake import (
    Refused,
    SealedDocument,
    accept_submission,
    check_recipient,
    record_refusal,
    seal_documents,
    vet_recipients,
)
from myhug.gateway.smtp import BARE_CR, BARE_LF, ConnectionLimiter, SubmissionSMTP, has_bare_cr, has_bare_lf
from myhug.gateway.submission import InvalidSubmission, parse_submission
from myhug.instruments import SUBMISSIONS

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary failure, message not accepted; try again later"
MAX_RECIPIENTS = 100


class DpiAuthenticator:
    """Checks SMTP AUTH credentials against the DPI clients.

    aiosmtpd calls authenticators synchronously on the event loop, so a
    successful argon2 verification is remembered (keyed by a hash of the
    credentials) for a few minutes: a DPI that reconnects all day costs one
    slow hash, not one per connection.
    """

    CACHE_SECONDS = 300

    def __init__(self, db: Database) -> None:
        self.db = db
        self._verified: dict[bytes, tuple[int, float]] = {}

    def __call__(self, server: SMTP, session: SmtpSession, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        key = hashlib.sha256(auth_data.login + b"\0" + auth_data.password).digest()
        cached = self._verified.get(key)
        if cached and cached[1] > time.monotonic():
            return AuthResult(success=True, auth_data=cached[0])
        try:
            # Reading only: on SQLite a write transaction would wait for the write lock here, on the event loop.
            with self.db.reading() as db_session:
                client = authenticate_dpi_client(db_session, login, password)
                client_id = client.id if client else None
        except SQLAlchemyError:
            log.exception("AUTH: database unavailable")
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")
        if client_id is None:
            log.warning("AUTH failed for %r from %s", login, session.peer)
            return AuthResult(success=False, handled=False)
        self._verified[key] = (client_id, time.monotonic() + self.CACHE_SECONDS)
        return AuthResult(success=True, auth_data=client_id)


class SubmissionHandler:
    """aiosmtpd handler: the DPI's documents come in here."""

    def __init__(
        self,
        db: Database,
        sealer: Sealer,
        settings: Settings,
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.settings = settings
        self.on_accepted = on_accepted
        # Concurrent submissions share a transaction and its commit (see db.group_commit). A DPI waits
        # on the line: at most `database.commit_timeout` for the store to take it, then 451.
        self.commit_timeout = settings.database.commit_timeout
        self.commits = GroupCommit(db, trail_savepoint, name="intake-commit", lock_timeout=self.commit_timeout)

    async def handle_MAIL(self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str, mail_options: list[str]) -> str:
        try:
            normalize_address(address)
        except InvalidIdentifier:
            return "553 5.1.7 The sender address is not valid; receipts go back to it"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS} per message)"
        try:
            await asyncio.to_thread(self._check_recipient, address, session.auth_data)
        except Refused as exc:
            return exc.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    def _check_recipient(self, address: str, client_id: Any) -> None:
        try:
            with self.db.reading() as db_session:
                check_recipient(db_session, address, self.settings.mail.domain)
        except Refused as exc:
            with self.db.transaction() as db_session:
                record_refusal(db_session, actor=f"dpi:{client_id}", reply=exc.reply, document_id=None, recipient=address)
            raise

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        reply = await self._data(session, envelope)
        SUBMISSIONS.labels(reply[:3]).inc()
        return reply

    async def _data(self, session: SmtpSession, envelope: Envelope) -> str:
        client_id = session.auth_data
        if not isinstance(client_id, int):
            return "530 5.7.0 Authentication required"
        raw = envelope.original_content or b""
        # Longer bare-LF data overflows aiosmtpd's line limit and is answered while reading (`bare_lf`).
        if has_bare_lf(raw):
            await asyncio.to_thread(self._audit_refusal, client_id, BARE_LF, None)
            return BARE_LF
        if has_bare_cr(raw):
            await asyncio.to_thread(self._audit_refusal, client_id, BARE_CR, None)
            return BARE_CR
        try:
            parsed = await asyncio.to_thread(parse_submission, raw)
        except InvalidSubmission as exc:
            reply = f"554 5.6.0 {exc}"
            await asyncio.to_thread(self._audit_refusal, client_id, reply, None)
            return reply
        # Parsed: the message itself is no longer needed. Dropped before sealing, a 34 MB message is not
        # held while its 25 MB document is encrypted and stored.
        envelope.content = envelope.original_content = None
        del raw
        # Encrypted before the transaction: AES-GCM holds no lock, and the clear bytes go before the rows are written.
        parsed, documents = await asyncio.to_thread(seal_documents, self.sealer, parsed)
        try:
            peer = str(session.peer[0]) if isinstance(session.peer, tuple) else None
            accepted = await asyncio.to_thread(self._store, client_id, envelope, parsed, documents, peer)
        except Refused as exc:
            await asyncio.to_thread(self._audit_refusal, client_id, exc.reply, parsed.document_id)
            return exc.reply
        except CommitTimeout:
            log.warning("submission not stored: the database did not take the commit within %ss "
                        "(database.commit_timeout); answered 451", self.commit_timeout)
            return TEMPFAIL
        if self.on_accepted is not None:
            self.on_accepted()
        log.info(
            "accepted %s document %s: %d new deliveries, %d duplicates",
            accepted.submission_id, parsed.document_id, accepted.new_deliveries, accepted.duplicates,
        )
        return f"250 2.0.0 queued as {accepted.submission_id}"

    def _store(self, client_id: int, envelope: Envelope, parsed: Any, documents: list[SealedDocument],
               peer: str | None = None) -> Any:
        # The recipients are vetted first, in a read-only transaction: under load the write lock is
        # the scarce resource, and its holder should only write (see `vet_recipients` for the race).
        with self.db.reading() as db_session:
            physicians = vet_recipients(db_session, self.sealer, patient_id=parsed.patient_id,
                                        recipients=list(envelope.rcpt_tos), mail_domain=self.settings.mail.domain)
        # A concurrent identical submission can win the race on the idempotency
        # key; the retry then sees it as a duplicate and answers with its id.
        # Deadlocks and lost connections are retried too; what still fails answers 451.
        # The result comes back only once the group's transaction is committed.
        def work(db_session: Session) -> Any:
            return accept_submission(
                db_session,
                self.sealer,
                dpi_client_id=client_id,
                envelope_sender=envelope.mail_from or "",
                physicians=physicians,
                parsed=parsed,
                documents=documents,
                mail_domain=self.settings.mail.domain,
                hin_domains=self.settings.relay.hin_domains,
                peer=peer,
            )

        return self.commits.run(work, timeout=self.commit_timeout)

    def _audit_refusal(self, client_id: int, reply: str, document_id: str | None) -> None:
        try:
            with self.db.transaction() as db_session:
                record_refusal(db_session, actor=f"dpi:{client_id}", reply=reply, document_id=document_id, recipient=None)
        except SQLAlchemyError:
            log.exception("could not audit a refusal")

    async def handle_exception(self, error: Exception) -> str:
        """Any fault answers 451 4.3.0 (never aiosmtpd's 500 with internals); details go to the log."""
        log.error("submission fault: %s: %s", type(error).__name__, error, exc_info=error)
        return TEMPFAIL


def server_tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def smtp_factory(handler: SubmissionHandler, settings: Settings, authenticator: DpiAuthenticator,
                 processes: int = 1) -> Callable[[], SMTP]:
    """The protocol factory for `loop.create_server`, in one of `processes` accepting on the same socket."""
    tls_context = server_tls_context(settings)
    require_tls = settings.smtp.require_tls
    limiter = ConnectionLimiter(settings.smtp.max_connections, settings.smtp.max_connections_per_peer, processes)

    def factory() -> SMTP:
        return SubmissionSMTP(
            handler,
            hostname=settings.smtp.hostname,
            data_size_limit=settings.smtp.max_message_size,
            tls_context=tls_context,
            require_starttls=require_tls,
            auth_required=True,
            auth_require_tls=require_tls,
            authenticator=authenticator,
            # Three AUTH tries per connection, then 421 and a closed connection.
            command_call_limit={"AUTH": 3, "*": 1000},
            ident="myHUG gateway",
            limiter=limiter,
            data_timeout=settings.smtp.data_timeout,
            pre_auth_timeout=settings.smtp.pre_auth_timeout,
            allowed_peers=settings.smtp.submission_peers,
        )

    return factory
