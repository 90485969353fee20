"""The smarthost sender's connection cache, against a real SMTP server with STARTTLS on loopback."""

from __future__ import annotations

import asyncio

import pytest

from myhug.mail.relay import RelayPermanentError, RelayTemporaryError, Smarthost, SmarthostSender
from tests.conftest import CertificateAuthority, MailSink, start_sink

MESSAGE = b"From: a@myhug.localhost\r\nTo: b@hug.localhost\r\nSubject: t\r\n\r\nbody\r\n"


def sender_for(port: int, ca: CertificateAuthority) -> SmarthostSender:
    return SmarthostSender(Smarthost("127.0.0.1", port, True, str(ca.file)))


async def test_messages_in_a_row_share_one_verified_tls_connection(test_ca: CertificateAuthority) -> None:
    sink, controller, port = start_sink(test_ca.server_context())
    sender = sender_for(port, test_ca)
    try:
        for n in range(3):
            await sender.send(MESSAGE, sender="a@myhug.localhost", recipients=[f"b{n}@hug.localhost"])
        assert [rcpts for _, rcpts, _ in sink.messages] == [["b0@hug.localhost"], ["b1@hug.localhost"],
                                                            ["b2@hug.localhost"]]
        assert len(set(map(str, sink.peers))) == 1  # one connection, one handshake
    finally:
        await sender.close()
        controller.stop()  # type: ignore[attr-defined]


async def test_a_connection_the_relay_closed_is_replaced_and_nothing_is_lost(test_ca: CertificateAuthority) -> None:
    sink, controller, port = start_sink(test_ca.server_context())
    sender = sender_for(port, test_ca)
    try:
        await sender.send(MESSAGE, sender="a@myhug.localhost", recipients=["b@hug.localhost"])
        controller.stop()  # type: ignore[attr-defined]  # the relay restarts: the cached connection is gone
        await asyncio.sleep(0.1)
        sink, controller, _ = start_sink(test_ca.server_context(), port=port)
        await sender.send(MESSAGE, sender="a@myhug.localhost", recipients=["c@hug.localhost"])
        assert [rcpts for _, rcpts, _ in sink.messages] == [["c@hug.localhost"]]
    finally:
        await sender.close()
        controller.stop()  # type: ignore[attr-defined]


async def test_a_connection_that_got_a_4xx_is_not_reused(test_ca: CertificateAuthority) -> None:
    sink, controller, port = start_sink(test_ca.server_context())
    sender = sender_for(port, test_ca)
    try:
        await sender.send(MESSAGE, sender="a@myhug.localhost", recipients=["b@hug.localhost"])
        sink.reply = "451 4.3.0 try later"
        with pytest.raises(RelayTemporaryError, match="451"):
            await sender.send(MESSAGE, sender="a@myhug.localhost", recipients=["c@hug.localhost"])
        sink.reply = "250 2.0.0 OK"
        await sender.send(MESSAGE, sender="a@myhug.localhost", recipients=["d@hug.localhost"])
        assert len(sink.peers) == 2 and sink.peers[0] != sink.peers[1]  # a fresh connection after the 451
    finally:
        await sender.close()
        controller.stop()  # type: ignore[attr-defined]


async def test_a_spooled_message_with_dot_lines_arrives_byte_for_byte(test_ca: CertificateAuthority) -> None:
    # Lines that begin with '.', one that is only '.', pieces cut just before them: the relay must read
    # back exactly what was spooled (a lone '.' not stuffed would end DATA early).
    from myhug.mail.mime import SpooledMessage

    class Tiny(SpooledMessage):
        IN_MEMORY = 256
        CHUNK = 40

    body = b"".join(line + b"\r\n" for line in
                    [b".", b"..", b".leading", b"x" * 38, b".after a cut", b"", b"plain", b"." * 100, b"end"])
    message = Tiny(b"From: a@myhug.localhost\r\nTo: b@hug.localhost\r\nSubject: t\r\n\r\n")
    message.write(body)
    sink, controller, port = start_sink(test_ca.server_context())
    sender = sender_for(port, test_ca)
    try:
        await sender.send(message, sender="a@myhug.localhost", recipients=["b@hug.localhost"])
        await sender.send(b".first line\r\nno final line end", sender="a@myhug.localhost",
                          recipients=["c@hug.localhost"])
        [(_, _, first), (_, _, second)] = sink.messages
        assert first == message.as_bytes()
        assert second == b".first line\r\nno final line end\r\n"
        assert f"SIZE={message.size}" in sink.envelopes[0][0]
    finally:
        message.close()
        await sender.close()
        controller.stop()  # type: ignore[attr-defined]


async def test_every_recipient_refused_is_a_refusal_and_one_of_two_is_not(test_ca: CertificateAuthority) -> None:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Picky(MailSink):
        async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                              rcpt_options: list[str]) -> str:
            if address.startswith("gone"):
                return "550 5.1.1 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    sink, controller, port = start_sink(test_ca.server_context(), handler=Picky())
    sender = sender_for(port, test_ca)
    try:
        with pytest.raises(RelayPermanentError, match="550"):
            await sender.send(MESSAGE, sender="a@myhug.localhost", recipients=["gone@hug.localhost"])
        await sender.send(MESSAGE, sender="a@myhug.localhost", recipients=["gone@hug.localhost", "b@hug.localhost"])
        assert [rcpts for _, rcpts, _ in sink.messages] == [["b@hug.localhost"]]
    finally:
        await sender.close()
        controller.stop()  # type: ignore[attr-defined]


async def test_a_relay_that_stops_reading_mid_data_is_a_temporary_error_not_a_hang() -> None:
    # The message is written as the connection drains: a relay that accepts DATA and then reads nothing
    # must time out (retry later) rather than hold the delivery for ever.
    from myhug.mail.mime import SpooledMessage

    stalled, release = asyncio.Event(), asyncio.Event()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 stalling relay\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-stalling\r\n250 SIZE 100000000\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                stalled.set()
                await release.wait()  # reads nothing more
                writer.close()
                return
            else:
                writer.write(b"250 OK\r\n")
            await writer.drain()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    message = SpooledMessage(b"Subject: big\r\n\r\n")
    for _ in range(400):
        message.write((b"x" * 998 + b"\r\n") * 100)  # 40 MB: more than the socket buffers hold
    sender = SmarthostSender(Smarthost("127.0.0.1", port, False, None), timeout=1)
    try:
        with pytest.raises(RelayTemporaryError):
            await asyncio.wait_for(sender.send(message, sender="a@myhug.localhost", recipients=["b@hug.localhost"]),
                                   timeout=20)
        assert stalled.is_set()
    finally:
        release.set()
        message.close()
        await sender.close()
        server.close()
        await asyncio.sleep(0.1)  # the handler closes its side
