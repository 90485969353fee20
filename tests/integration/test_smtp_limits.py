"""The SMTP edge against what a hostile or broken peer sends: bare LF, long lines, slowloris, floods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from myhug.components import Components
from myhug.delivery.models import Submission
from myhug.directory.service import DpiCredentials
from myhug.supervisor import Running, start
from tests.conftest import Directory
from tests.helpers import SmtpLine, count, message


@pytest.fixture
async def smtp_only(gateway: Components) -> AsyncIterator[Running]:
    """The SMTP role alone, started after the test has set its limits."""
    runs: list[Running] = []

    async def starter() -> Running:
        runs.append(await start(gateway, ("smtp",)))
        return runs[-1]

    yield starter  # type: ignore[misc]
    for run in runs:
        await run.stop()


async def _envelope(line: SmtpLine, rcpt: str) -> None:
    assert (await line.command(b"MAIL FROM:<dpi@hug.localhost>")).startswith("250")
    assert (await line.command(f"RCPT TO:<{rcpt}>".encode())).startswith("250")


async def test_bare_lf_message_gets_a_5xx_that_says_so_and_nothing_is_stored(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    good = message([doctor.address]).replace(b"\r\n", b"\n")
    line = await SmtpLine.open(running, gateway, (dpi.username, dpi.password))
    try:
        for raw in (good[:900], good):  # short enough for one "line", and longer than aiosmtpd's line limit
            await _envelope(line, doctor.address)
            reply = await line.data(raw)
            assert reply.startswith("554 5.6.0 Bare LF"), reply
        # Same connection, proper CR LF: accepted.
        await _envelope(line, doctor.address)
        reply = await line.data(good.replace(b"\n", b"\r\n"))
        assert reply.startswith("250 2.0.0"), reply
    finally:
        line.close()
    assert count(gateway, Submission) == 1


async def test_line_over_the_limit_gets_an_enhanced_code(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    raw = message([doctor.address]).replace(b"\n", b"\r\n").replace(b"\nSubject:", b"\nX-Long: " + b"a" * 2000 + b"\r\nSubject:")
    line = await SmtpLine.open(running, gateway, (dpi.username, dpi.password))
    try:
        await _envelope(line, doctor.address)
        reply = await line.data(raw)
        assert reply.startswith("500 5.5.2 Line too long"), reply
        assert (await line.command(b"NOOP")).startswith("250")  # still serving
    finally:
        line.close()
    assert count(gateway, Submission) == 0


async def test_data_trickled_past_the_deadline_is_cut_with_421(
    smtp_only, gateway: Components, dpi: DpiCredentials, directory: Directory  # type: ignore[no-untyped-def]
) -> None:
    gateway.settings.smtp.data_timeout = 1
    run = await smtp_only()
    doctor = directory.hosted(consents=("P-1001",))
    line = await SmtpLine.open(run, gateway, (dpi.username, dpi.password))
    try:
        await _envelope(line, doctor.address)
        assert (await line.command(b"DATA")).startswith("354")
        reply = None
        for chunk in message([doctor.address]).split(b"\n")[:40]:  # one line every 0.2 s: never idle, never done
            line.writer.write(chunk + b"\r\n")
            await line.writer.drain()
            try:
                reply = await asyncio.wait_for(line.read(), 0.2)
                break
            except TimeoutError:
                continue
        assert reply is not None and reply.startswith("421 4.4.2"), reply
        assert await line.reader.read() == b""  # and the connection is closed
    finally:
        line.close()
    assert count(gateway, Submission) == 0


async def test_connections_are_capped_per_peer_and_in_total(smtp_only, gateway: Components) -> None:  # type: ignore[no-untyped-def]
    gateway.settings.smtp.max_connections_per_peer = 2
    gateway.settings.smtp.max_connections = 3
    run = await smtp_only()
    assert run.smtp_address is not None

    async def greeting(local: str) -> tuple[str, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(*run.smtp_address, local_addr=(local, 0))
        return (await reader.readline()).decode(), writer

    opened = [await greeting("127.0.0.1"), await greeting("127.0.0.1")]
    assert all(text.startswith("220") for text, _ in opened)
    third, writer = await greeting("127.0.0.1")
    assert third.startswith("421 4.7.0"), third
    writer.close()
    other, other_writer = await greeting("127.0.0.2")  # another peer still gets in...
    assert other.startswith("220"), other
    total, writer = await greeting("127.0.0.3")  # ...until the total cap
    assert total.startswith("421 4.7.0"), total
    writer.close()
    opened[0][1].close()
    await asyncio.sleep(0.2)
    again, writer = await greeting("127.0.0.1")  # a closed connection frees its place
    assert again.startswith("220"), again
    for w in (writer, other_writer, opened[1][1]):
        w.close()


async def test_end_of_data_counts_only_at_the_start_of_a_line_and_smuggling_shapes_do_not_end_it(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    """`<LF>.<LF>`, `<CR>.<CR>`, `x.<CRLF>` inside DATA end nothing: one reply, and no smuggled command runs."""
    doctor = directory.hosted(consents=("P-1001",))
    good = message([doctor.address]).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    smuggled = b"\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nhidden\r\n"
    line = await SmtpLine.open(running, gateway, (dpi.username, dpi.password))
    try:
        await _envelope(line, doctor.address)
        reply = await line.data(good + smuggled + b"\r.\rline ending with a dot.\r\n")
        assert reply.startswith("554 5.6.0 Bare LF"), reply  # the whole thing was one message
        assert (await line.command(b"NOOP")).startswith("250")  # in step: the next reply is the NOOP's
    finally:
        line.close()
    assert count(gateway, Submission) == 0


@pytest.mark.parametrize("ending", [b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\r"])
async def test_a_bare_cr_anywhere_in_data_is_refused_and_nothing_is_stored(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory, ending: bytes
) -> None:
    """RFC 5321 2.3.8: the shapes that once got 250 with the text after them stored inside the document."""
    doctor = directory.hosted(consents=("P-1001",))
    good = message([doctor.address]).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    line = await SmtpLine.open(running, gateway, (dpi.username, dpi.password))
    try:
        await _envelope(line, doctor.address)
        reply = await line.data(good + ending + b"MAIL FROM:<evil@example.org>\r\ntrailing text")
        assert reply.startswith("554 5.6.0 Bare CR"), reply
        assert (await line.command(b"NOOP")).startswith("250")  # still in step
    finally:
        line.close()
    assert count(gateway, Submission) == 0


async def test_dot_stuffed_lines_are_restored_and_a_pipelined_command_is_kept(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    import json

    from sqlalchemy import select

    doctor = directory.hosted(consents=("P-1001",))
    note = ".\n..\n.hidden line\nend."
    raw = message([doctor.address], note=note).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    stuffed = b"\r\n".join(b"." + row if row.startswith(b".") else row for row in raw.split(b"\r\n"))
    line = await SmtpLine.open(running, gateway, (dpi.username, dpi.password))
    try:
        await _envelope(line, doctor.address)
        assert (await line.command(b"DATA")).startswith("354")
        line.writer.write(stuffed + b"\r\n.\r\nNOOP\r\n")  # the end of data and the next command in one write
        await line.writer.drain()
        assert (await line.read()).startswith("250 2.0.0 queued as")
        assert (await line.read()).startswith("250")  # the NOOP, read from what followed the end of data
    finally:
        line.close()
    with gateway.db.reading() as session:
        submission = session.scalars(select(Submission)).one()
        assert json.loads(gateway.sealer.open_id(session, submission.metadata_blob_id))["note"] == note


async def test_a_connection_not_authenticated_in_time_gets_421_and_is_closed_an_authenticated_one_stays(
    smtp_only, gateway: Components, dpi: DpiCredentials  # type: ignore[no-untyped-def]
) -> None:
    gateway.settings.smtp.pre_auth_timeout = 1
    run = await smtp_only()
    assert run.smtp_address is not None
    reader, writer = await asyncio.open_connection(*run.smtp_address)
    authenticated = await SmtpLine.open(run, gateway, (dpi.username, dpi.password))
    try:
        assert (await reader.readline()).startswith(b"220")
        writer.write(b"EHLO silent\r\n")  # talking is not enough: only AUTH stops the clock
        while (await reader.readline())[3:4] == b"-":
            pass
        closing = await asyncio.wait_for(reader.readline(), 10)
        assert closing.startswith(b"421 4.4.2"), closing
        assert await reader.read() == b""  # closed
        assert (await authenticated.command(b"NOOP")).startswith("250")  # past the limit, still served
    finally:
        writer.close()
        authenticated.close()


async def test_an_idle_connection_is_told_421_before_it_is_closed(
    smtp_only, gateway: Components, dpi: DpiCredentials, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    from myhug.gateway.smtp import SubmissionSMTP

    original = SubmissionSMTP.__init__

    def short_idle(self: SubmissionSMTP, *args: object, **kwargs: object) -> None:
        original(self, *args, **{**kwargs, "timeout": 1})  # aiosmtpd's idle timer (300 s), shortened

    monkeypatch.setattr(SubmissionSMTP, "__init__", short_idle)
    run = await smtp_only()
    line = await SmtpLine.open(run, gateway, (dpi.username, dpi.password))
    try:
        closing = await asyncio.wait_for(line.read(), 10)
        assert closing.startswith("421 4.4.2"), closing
    finally:
        line.close()


async def test_only_the_submission_peers_may_connect_and_strangers_hold_no_slot(
    smtp_only, gateway: Components  # type: ignore[no-untyped-def]
) -> None:
    gateway.settings.smtp.submission_peers = ["127.0.0.2/32"]
    gateway.settings.smtp.max_connections = 2
    run = await smtp_only()
    assert run.smtp_address is not None

    async def greeting(local: str) -> tuple[bytes, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(*run.smtp_address, local_addr=(local, 0))
        return await reader.readline(), writer

    strangers = [await greeting("127.0.0.1") for _ in range(5)]
    assert all(text.startswith(b"554 5.7.1") for text, _ in strangers), strangers
    dpi_side = [await greeting("127.0.0.2") for _ in range(2)]  # the whole total cap is still the DPI's
    assert all(text.startswith(b"220") for text, _ in dpi_side), dpi_side
    for _, writer in strangers + dpi_side:
        writer.close()
