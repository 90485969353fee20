"""Several documents as one ZIP, streamed: "Tout télécharger (ZIP)".

The archive is written as it is sent. Each file is read from the database
in slices, authenticated, then decrypted and handed to the client in 1 MiB
pieces (`Sealer.open_pieces`), so the process holds a few pieces, never a file
nor the archive: 20 files of 20 MB grow the server by a few megabytes, not by
400 (measured in tests/integration/test_webmail_bulk.py).
Files are stored, not deflated: PDFs and images are compressed already.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.blobs.store import Sealer
from myhug.db.session import Database
from myhug.directory.delegation import Delegate
from myhug.directory.models import Physician
from myhug.mailbox.models import MailboxItem
from myhug.mailbox.reading import own_item, record_reading, summarize
from myhug.xdm.metadata import Origin, PackageFile, package_of
from myhug.xdm.package import xdm_zip

# Characters Windows, macOS or a ZIP tool refuse or misread in a file name, and controls.
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{n}" for n in range(10)), *(f"lpt{n}" for n in range(10))}


@dataclass(frozen=True)
class ArchiveEntry:
    """One file of the archive: its path inside it, and the sealed blob it comes from."""

    name: str
    blob_id: str
    deposited_at: datetime


def safe_name(text: str, fallback: str = "document", limit: int = 100) -> str:
    """A file or folder name every system accepts: no separators, controls, reserved names or trailing dots."""
    name = _UNSAFE.sub("_", unicodedata.normalize("NFC", text))
    name = " ".join(name.split()).strip(" .")
    if len(name) > limit:  # keep the extension: "…lettre.pdf", not "…lettre.p"
        stem, dot, ext = name.rpartition(".")
        name = (stem[: limit - len(ext) - 1].rstrip(" .") + "." + ext) if dot and len(ext) <= 8 else name[:limit]
    if not name or name.split(".")[0].lower() in _RESERVED:
        name = f"{fallback}-{name}" if name else fallback
    return name


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or "name (2).ext", "name (3).ext"… if already in the archive (compared as Windows does, by case)."""
    stem, dot, ext = name.rpartition(".") if "." in name.rsplit("/", 1)[-1] else (name, "", "")
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem} ({number}){dot}{ext}"
    taken.add(candidate.lower())
    return candidate


def archive_entries(session: Session, sealer: Sealer, physician: Physician, item_ids: list[int],
                    actor: str, reader: Delegate | None = None) -> list[ArchiveEntry]:
    """The files of the physician's documents, named for the archive; records each document as read.

    Raises `DocumentUnavailable` if one is not the physician's or not
    available. With one document, its files sit at the archive's root; with
    several, each document has a folder ("2026-12-07 Favre Agnès - Lettre de
    sortie"). The `read` receipt is recorded here, before a byte is sent,
    as when a file is opened.
    """
    taken: set[str] = set()
    entries: list[ArchiveEntry] = []
    for item_id in item_ids:
        item = own_item(session, physician, item_id, actor)
        summary = summarize(session, sealer, item)
        folder = ""
        if len(item_ids) > 1:
            title = f"{item.deposited_at:%Y-%m-%d} {summary.patient_surname_first} - {summary.subject or 'Document'}"
            folder = _unique(safe_name(title, limit=80), taken) + "/"
        for document in item.submission.documents:
            position = document.position
            filename = summary.filenames[position] if position < len(summary.filenames) else ""
            name = _unique(folder + safe_name(filename, fallback=f"document-{position + 1}"), taken)
            entries.append(ArchiveEntry(name, document.blob_id, item.deposited_at))
        record_reading(session, item, physician, actor, reader)
    return entries


def available_items(session: Session, physician: Physician, item_ids: list[int]) -> list[int]:
    """Of a selection in the list, the physician's documents that can still be downloaded, in list order."""
    return list(session.scalars(
        select(MailboxItem.id).where(MailboxItem.physician_id == physician.id, MailboxItem.id.in_(item_ids),
                                     MailboxItem.state == "available")
        .order_by(MailboxItem.deposited_at.desc(), MailboxItem.id.desc())
    ))


class _Pieces:
    """The file object zipfile writes to: it keeps what was written until the stream takes it."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self.pieces.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """zipfile flushes; the stream sends."""

    def close(self) -> None:
        """The stream ends when the generator does."""

    def take(self) -> Iterator[bytes]:
        pieces, self.pieces = self.pieces, []
        yield from pieces


def zip_stream(db: Database, sealer: Sealer, entries: list[ArchiveEntry]) -> Iterator[bytes]:
    """The ZIP of `entries`, piece by piece; each file decrypted in its own short read when its turn comes."""
    sink = _Pieces()
    # No `seek` or `tell` on the sink: zipfile then writes data descriptors, as a streaming writer must.
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for entry in entries:
            size, pieces = sealer.open_pieces(db, entry.blob_id)
            info = zipfile.ZipInfo(entry.name, date_time=entry.deposited_at.timetuple()[:6])
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = size
            with archive.open(info, "w", force_zip64=size > zipfile.ZIP64_LIMIT) as member:
                for piece in pieces:
                    member.write(piece)
                    yield from sink.take()
            yield from sink.take()
    yield from sink.take()


def practice_package(session: Session, sealer: Sealer, physician: Physician, item_id: int, actor: str,
                     origin: Origin, reader: Delegate | None = None) -> bytes:
    """"Pour votre logiciel de cabinet (XDM)": the document's IHE_XDM.zip, its FHIR Bundle inside; a reading."""
    item = own_item(session, physician, item_id, actor)
    submission = item.submission
    meta = json.loads(sealer.open_id(session, submission.metadata_blob_id))
    filenames = meta.get("filenames", [])
    documents = submission.documents
    plain = sealer.open_ids(session, [d.blob_id for d in documents])
    files = [PackageFile(filenames[d.position] if d.position < len(filenames) else f"document-{d.position + 1}",
                         d.content_type, plain[d.blob_id]) for d in documents]
    package = package_of(meta, document_id=submission.document_id, document_type=submission.document_type,
                         created=submission.received_at, files=files)
    record_reading(session, item, physician, actor, reader)
    return xdm_zip(package, origin, with_fhir=True)
