"""The smarthost sender's connection cache, against a real SMTP server with STARTTLS on loopback."""

from __future__ import annotations

import asyncio

import pytest

from myhug.gateway.relay import RelayTemporaryError, Smarthost, SmarthostSender
from tests.conftest import CertificateAuthority, start_sink

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
