"""Test helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import func, select

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.dpi_client import Attachment, build_submission, sample_pdf, submit
from myhug.supervisor import Running

PDF = sample_pdf("myHUG test document")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def web_base(running: Running) -> str:
    """The base URL of a running gateway's web server."""
    assert running.web_address is not None
    return "http://{}:{}".format(*running.web_address)


def message(recipients: list[str], *, patient: str = "P-1001", document: str = "DOC-1", **extra: Any) -> bytes:
    kwargs: dict[str, Any] = dict(
        sender="dpi@hug.localhost", recipients=recipients, patient_id=patient, document_id=document,
        patient_name="Jean Exemple", patient_birthdate="1950-01-31", document_type="discharge-letter",
        subject="Lettre de sortie de Jean Exemple", attachments=[Attachment("lettre.pdf", PDF)],
    )
    kwargs.update(extra)
    return build_submission(**kwargs).as_bytes()


def tls_context(gateway: Components) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(gateway.settings.tls_cert_file))


async def connect(running: Running, gateway: Components, *, tls: bool = True,
                  credentials: tuple[str, str] | None = None) -> aiosmtplib.SMTP:
    assert running.smtp_address is not None
    host, port = running.smtp_address
    client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=tls, tls_context=tls_context(gateway), timeout=30)
    await client.connect()
    if credentials:
        await client.login(*credentials)
    return client


async def reply(call: Awaitable[Any]) -> tuple[int, str]:
    """The (code, text) of an SMTP command, whether it succeeded or not."""
    try:
        response = await call
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    if isinstance(response, tuple):  # send_message
        response = response[1]
        return 250, str(response)
    return response.code, response.message


async def send(running: Running, gateway: Components, credentials: tuple[str, str], raw: bytes,
               recipients: list[str], sender: str = "dpi@hug.localhost") -> tuple[int, str]:
    """MAIL, RCPT..., DATA on a fresh authenticated connection; the first non-2xx reply or DATA's."""
    client = await connect(running, gateway, credentials=credentials)
    try:
        code, text = await reply(client.mail(sender))
        if code >= 300:
            return code, text
        for rcpt in recipients:
            code, text = await reply(client.rcpt(rcpt))
            if code >= 300:
                return code, text
        return await reply(client.data(raw))
    finally:
        await client.quit()


def count(gateway: Components, model: Any, *where: Any) -> int:
    with gateway.db.reading() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def eventually(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def raw_dialogue(address: tuple[str, int], commands: list[bytes]) -> list[str]:
    """Send plain-text SMTP commands one by one; returns each full (multi-line) reply."""
    reader, writer = await asyncio.open_connection(*address)
    replies: list[str] = []

    async def read_reply() -> str:
        lines = []
        while True:
            line = (await reader.readline()).decode()
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return "\n".join(lines)

    try:
        await read_reply()  # greeting
        for command in commands:
            writer.write(command + b"\r\n")
            await writer.drain()
            replies.append(await read_reply())
    finally:
        writer.close()
    return replies


def myhug(settings: Settings, *args: str, check: bool = True,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`myhug ARGS --data-dir …` as an operator runs it, on the test's database (and `env`'s MYHUG_* settings)."""
    env = {**os.environ, "MYHUG_DATABASE__URL": settings.database_url, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "myhug.cli", *args, "--data-dir", str(settings.data_dir)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("myhug: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


class SmtpLine:
    """A raw SMTP client over STARTTLS, for what aiosmtplib would repair (bare LF, long lines, trickling)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, running: Running, gateway: Components, credentials: tuple[str, str] | None = None,
                   local_address: str | None = None) -> SmtpLine:
        import base64

        assert running.smtp_address is not None
        reader, writer = await asyncio.open_connection(
            *running.smtp_address, local_addr=(local_address, 0) if local_address else None)
        line = cls(reader, writer)
        await line.read()  # greeting
        await line.command(b"EHLO dpi")
        assert (await line.command(b"STARTTLS")).startswith("220")
        await writer.start_tls(tls_context(gateway), server_hostname=gateway.settings.smtp.hostname)
        await line.command(b"EHLO dpi")
        if credentials:
            token = base64.b64encode(b"\0" + credentials[0].encode() + b"\0" + credentials[1].encode())
            assert (await line.command(b"AUTH PLAIN " + token)).startswith("235")
        return line

    async def read(self) -> str:
        lines = []
        while True:
            raw = await self.reader.readline()
            if not raw:
                return "\n".join(lines) or "(connection closed)"
            lines.append(raw.decode().rstrip("\r\n"))
            if raw[3:4] != b"-":
                return "\n".join(lines)

    async def command(self, command: bytes) -> str:
        self.writer.write(command + b"\r\n")
        await self.writer.drain()
        return await self.read()

    async def data(self, raw: bytes, end: bytes = b"\r\n.\r\n") -> str:
        assert (await self.command(b"DATA")).startswith("354")
        self.writer.write(raw + end)
        await self.writer.drain()
        return await self.read()

    def close(self) -> None:
        self.writer.close()


def accept_directly(gateway: Components, doctor_address: str, parsed: Any = None) -> Any:
    """Intake's transaction without the SMTP edge (DPI client 1, the `dpi` fixture's): returns `Accepted`."""
    from myhug.gateway.intake import accept_submission, seal_documents, vet_recipients
    from myhug.gateway.submission import parse_submission

    parsed, documents = seal_documents(gateway.sealer, parsed or parse_submission(message([doctor_address])))
    with gateway.db.transaction() as session:
        physicians = vet_recipients(session, gateway.sealer, patient_id=parsed.patient_id,
                                    recipients=[doctor_address], mail_domain=gateway.settings.mail.domain)
        return accept_submission(
            session, gateway.sealer, dpi_client_id=1, envelope_sender="dpi@hug.localhost",
            physicians=physicians, parsed=parsed, documents=documents,
            mail_domain=gateway.settings.mail.domain, hin_domains=gateway.settings.relay.hin_domains)


def serve_process(settings: Settings, roles: str | None, log: Path, *, smtp_port: int | None = None,
                  database_url: str | None = None, workers: int | None = None,
                  **overrides: str) -> subprocess.Popen[bytes]:
    """`myhug serve --role ROLES` as its own process on free ports, its output in `log`.

    `roles=None` runs `myhug serve` as an operator would, with its worker processes (`workers`).

    It gets the settings' database and relays, a quick poll interval, and `overrides`
    (`MYHUG_*` variables); other `MYHUG_*` variables of the test process are not inherited.
    """
    relay = settings.relay
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYHUG_")}
    env.update({
        "MYHUG_DATABASE__URL": database_url or settings.database_url,
        "MYHUG_SMTP__LISTEN": f"127.0.0.1:{smtp_port or free_port()}",
        "MYHUG_WEB__LISTEN": f"127.0.0.1:{free_port()}",
        "MYHUG_SMTP__INBOUND_LISTEN": f"127.0.0.1:{free_port()}",
        "MYHUG_QUEUE__POLL_INTERVAL": "0.1",
    })
    for name in ("hin_smarthost", "dpi_smarthost", "smarthost", "ca_file"):
        if getattr(relay, name):
            env[f"MYHUG_RELAY__{name.upper()}"] = getattr(relay, name)
    env.update(overrides)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "myhug.cli", "serve", "--data-dir", str(settings.data_dir),
             *(["--role", roles] if roles else []), *(["--workers", str(workers)] if workers is not None else [])],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Until the process accepts connections on `port`; fails with its log if it exits first."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("myhug serve did not start listening")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 40) -> int:
    """Stop a process this test started, by its id: SIGTERM, then SIGKILL if it does not end; its exit code."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return -9
    return proc.returncode


def children(pid: int) -> set[int]:
    """The live child processes of `pid`, read from /proc (by parent id, never by name)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def submit_document(settings: Settings, port: int, credentials: tuple[str, str], recipient: str,
                          document_id: str) -> int:
    """One submission (patient P-1001, a small PDF) on its own connection to a `myhug serve` on `port`: the reply code."""
    message = build_submission(sender="dpi@hug.localhost", recipients=[recipient], patient_id="P-1001",
                               document_id=document_id, attachments=[Attachment("a.pdf", sample_pdf(document_id))])
    reply = await submit(message, host="127.0.0.1", port=port, username=credentials[0], password=credentials[1],
                         cafile=str(settings.tls_cert_file), timeout=60)
    return int(reply.code)


def dsn_report(envid: str, recipient: str, action: str = "delivered", status: str = "2.0.0") -> bytes:
    """A DSN (RFC 3464) as the HIN relay sends it, about the delivery `envid` to `recipient`."""
    return (
        "From: MAILER-DAEMON@hin.ch\r\nTo: receipts@myhug.localhost\r\nSubject: DSN\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nreport\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mail.hin.ch\r\nOriginal-Envelope-Id: {envid}\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n\r\n--B--\r\n"
    ).encode()


def mdn_report(message_id: str, sender: str, final_recipient: str) -> bytes:
    """An MDN (RFC 8098, "displayed") from `sender` about the message `message_id`."""
    return (
        f"From: {sender}\r\nTo: receipts@myhug.localhost\r\nSubject: Lu\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nread\r\n"
        "--B\r\nContent-Type: message/disposition-notification\r\n\r\n"
        f"Reporting-UA: Thunderbird\r\nFinal-Recipient: rfc822; {final_recipient}\r\n"
        f"Original-Message-ID: {message_id}\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--B--\r\n"
    ).encode()
