"""The list's bulk actions and the ZIP download, over real HTTP and without JavaScript (one form POST).

Marking seen is the list's mark only: it never sends the DPI a read receipt,
and it never withholds the one the first real opening sends. The ZIP holds the
exact bytes, under safe and unique names, and records `read` for each document.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

from sqlalchemy import select

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.delivery.models import Delivery
from myhug.directory.service import DpiCredentials
from myhug.dpi_client import Attachment
from myhug.mailbox.archive import safe_name
from myhug.mailbox.models import MailboxItem
from myhug.supervisor import Running
from tests.conftest import Directory
from tests.helpers import PDF, count, free_port, serve_process, wait_listening
from tests.helpers import web_base as base
from tests.integration.test_webmail import deposit, deposit_types, events
from tests.webclient import WebClient
from tests.webmail_flow import login_sms


def items(gateway: Components) -> list[int]:
    with gateway.db.transaction() as session:
        return list(session.scalars(select(MailboxItem.id).order_by(MailboxItem.id)))


def delivery_states(gateway: Components) -> list[str]:
    with gateway.db.transaction() as session:
        return sorted(session.scalars(select(Delivery.state)))


async def test_marking_seen_is_the_lists_mark_only_and_the_first_opening_still_sends_the_receipt(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    for n in range(3):
        await deposit(running, gateway, dpi, doctor, document=f"DOC-{n}", subject=f"Rapport {n}")
    first, second, third = items(gateway)
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        listing = await client.get("/documents?show=all&days=30")
        assert listing.text.count('name="item"') == 3 and '<span class="badge">3<' in listing.text
        csrf = await client.csrf_of("/documents")
        back = re.search(r'name="back" value="([^"]*)"', listing.text).group(1)  # type: ignore[union-attr]
        done = await client.post("/documents/bulk", {"action": "read", "item": [str(first), str(second)],
                                                     "back": back.replace("&amp;", "&")}, csrf=csrf)
        assert done.url.path == "/documents" and "La sélection est marquée comme lue" in done.text
        assert "days=30" in str(done.url)  # back to the same list
        assert '<span class="badge">1<' in done.text
        assert events(gateway, "read") == [] and delivery_states(gateway) == ["deposited"] * 3  # no receipt
        opened = await client.get(f"/documents/{first}/files/0")
        assert opened.content == PDF
        assert len(events(gateway, "read")) == 1 and delivery_states(gateway).count("read") == 1  # now the receipt

        again = await client.post("/documents/bulk", {"action": "unread", "item": [str(first), str(second)]},
                                  csrf=csrf)
        assert "de nouveau marquée comme non lue" in again.text and '<span class="badge">3<' in again.text
        nothing = await client.post("/documents/bulk", {"action": "read"}, csrf=csrf)
        assert "Aucun document sélectionné" in nothing.text and '<span class="badge">3<' in nothing.text
        everything = await client.post("/documents/bulk", {"action": "all-read"}, csrf=csrf)
        assert "Tous vos documents sont marqués comme lus" in everything.text and 'class="badge"' not in everything.text
        assert delivery_states(gateway).count("read") == 1  # still only the one opened

        # Someone else's document in the selection changes nothing of theirs.
        other = directory.hosted(consents=("P-1001",))
        await deposit(running, gateway, dpi, other, document="DOC-9")
        theirs = items(gateway)[-1]
        await client.post("/documents/bulk", {"action": "read", "item": [str(theirs)]}, csrf=csrf)
        with gateway.db.transaction() as session:
            assert session.get(MailboxItem, theirs).read_at is None  # type: ignore[union-attr]
        refused = await client.post("/documents/bulk", {"action": "read", "item": [str(third)]}, csrf="forged")
        assert refused.status_code == 403


async def test_select_all_without_javascript_ticks_every_box(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    for n in range(2):
        await deposit(running, gateway, dpi, doctor, document=f"DOC-{n}")
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        plain = (await client.get("/documents")).text
        assert 'name="item"' in plain and " checked " not in plain and "Tout sélectionner" in plain
        link = re.search(r'href="\?([^"]*select=all)"', plain).group(1)  # type: ignore[union-attr]
        ticked = (await client.get("/documents?" + link.replace("&amp;", "&"))).text
        assert ticked.count(" checked ") == 2 and "Tout désélectionner" in ticked


async def test_the_zip_holds_the_exact_files_under_safe_unique_names_and_records_each_read(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    scan = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    await deposit(running, gateway, dpi, doctor, document="DOC-1", subject="Lettre / sortie: CON",
                  attachments=[Attachment("lettre.pdf", PDF), Attachment("LETTRE.pdf", PDF + b"2"),
                               Attachment("scan: 1*2?.png", scan)])
    await deposit(running, gateway, dpi, doctor, document="DOC-2", subject="Lettre / sortie: CON")
    await deposit(running, gateway, dpi, doctor, document="DOC-3", subject="Retiré ensuite")
    one, two, withdrawn = items(gateway)
    async with WebClient(base(running)) as client:
        await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
        page = (await client.get(f"/documents/{one}")).text
        assert f'href="/documents/{one}/archive"' in page and "Tout télécharger (ZIP)" in page
        single = await client.get(f"/documents/{one}/archive")
        assert single.headers["content-type"] == "application/zip"
        assert single.headers["content-disposition"].startswith('attachment; filename="myHUG-documents-')
        assert "Exemple" not in single.headers["content-disposition"]  # no patient name in the saved file's name
        with zipfile.ZipFile(io.BytesIO(single.content)) as archive:
            assert archive.testzip() is None
            assert archive.namelist() == ["lettre.pdf", "LETTRE (2).pdf", "scan_ 1_2_.png"]
            assert [archive.read(n) for n in archive.namelist()] == [PDF, PDF + b"2", scan]
        assert len(events(gateway, "read")) == 1

        with gateway.db.transaction() as session:
            session.get(MailboxItem, withdrawn).state = "retracted"  # type: ignore[union-attr]
        csrf = await client.csrf_of("/documents")
        selection = await client.post("/documents/bulk", {"action": "zip", "item": [str(one), str(two), str(withdrawn)]},
                                      csrf=csrf)
        with zipfile.ZipFile(io.BytesIO(selection.content)) as archive:
            names = archive.namelist()
            assert len(names) == 4 and len({n.lower() for n in names}) == 4
            folders = sorted({n.split("/")[0] for n in names})
            assert len(folders) == 2 and all("Exemple Jean - Lettre _ sortie_ CON" in f for f in folders)
            assert all(".." not in part for n in names for part in n.split("/")[:-1])
            assert sorted(archive.read(n) for n in names) == sorted([PDF, PDF + b"2", scan, PDF])
        assert len(events(gateway, "read")) == 2  # DOC-2 read now; DOC-1 was read already; the withdrawn one skipped
        only_withdrawn = await client.post("/documents/bulk", {"action": "zip", "item": [str(withdrawn)]}, csrf=csrf)
        assert "ne peut être téléchargé" in only_withdrawn.text
        assert (await client.get(f"/documents/{withdrawn}/archive")).status_code == 404
    assert count(gateway, MailboxItem) == 3


def test_safe_names_refuse_separators_reserved_names_and_keep_the_extension() -> None:
    assert safe_name("a/b\\c:d*e?.pdf") == "a_b_c_d_e_.pdf"
    assert safe_name("CON.pdf") == "document-CON.pdf"
    assert safe_name("  . ") == "document"
    assert safe_name("x" * 300 + ".pdf").endswith("x.pdf") and len(safe_name("x" * 300 + ".pdf")) == 100
    assert safe_name("ligne\nnouvelle\x00.pdf") == "ligne_nouvelle_.pdf"


def _memory(pid: int, field: str) -> int:
    """A process's VmRSS or VmHWM (its peak since the last reset), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


async def _download(client: WebClient, pid: int, target: Path, method: str, path: str,
                    data: dict[str, object] | None = None) -> int:
    """Stream a download to `target`; how much the server process's peak RSS grew meanwhile."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM: the peak from here on
    before = _memory(pid, "VmRSS")
    headers = {**client._cookie_header(), "Origin": client.base_url}
    async with client.http.stream(method, path, headers=headers, data=data) as response:
        assert response.status_code == 200
        with target.open("wb") as out:
            async for piece in response.aiter_raw():
                out.write(piece)
    return _memory(pid, "VmHWM") - before


async def test_twenty_documents_of_twenty_megabytes_stream_as_a_zip_without_growing_the_server_by_50_mb(
    running: Running, gateway: Components, settings: Settings, dpi: DpiCredentials, directory: Directory,
    tmp_path: Path,
) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    await deposit_types(running, gateway, doctor, ["lab-report"] * 20)
    expected: list[str] = []
    with gateway.db.transaction() as session:  # each document's file becomes 20 MB of its own bytes
        for item in session.scalars(select(MailboxItem).order_by(MailboxItem.id)):
            data = os.urandom(1 << 16) * 320
            blob = gateway.sealer.seal(session, data)
            [document] = item.submission.documents
            document.blob_id, document.size = blob.id, len(data)
            expected.append(hashlib.sha256(data).hexdigest())
    ids = items(gateway)
    # The server measured is a process of its own, `myhug serve --role web`, as in production.
    port = free_port()
    server = serve_process(settings, "web", tmp_path / "web.log", MYHUG_WEB__LISTEN=f"127.0.0.1:{port}")
    try:
        wait_listening(port, server, tmp_path / "web.log")
        async with WebClient(f"http://127.0.0.1:{port}") as client:
            await login_sms(client, gateway.settings.sms_outbox, doctor.login or "", doctor.password)
            csrf = await client.csrf_of("/documents")
            one = await _download(client, server.pid, tmp_path / "one.pdf", "GET", f"/documents/{ids[0]}/files/0")
            growth = await _download(client, server.pid, tmp_path / "all.zip", "POST", "/documents/bulk",
                                     {"csrf": csrf, "action": "zip", "item": [str(i) for i in ids]})
    finally:
        server.terminate()
        server.wait(30)
    print(f"server peak RSS growth: one 20 MB file {one / 2**20:.1f} MB, ZIP of 20 × 20 MB {growth / 2**20:.1f} MB")
    # The issue allows 50 MB; holding even one of the files would pass 20.
    assert growth <= 20 * 2**20, f"the server grew by {growth / 2**20:.1f} MB"
    with zipfile.ZipFile(tmp_path / "all.zip") as archive:
        assert len(archive.namelist()) == 20
        assert sorted(hashlib.sha256(archive.read(n)).hexdigest() for n in archive.namelist()) == sorted(expected)
    assert len(events(gateway, "read")) == 20
