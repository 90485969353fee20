"""A document in clear, as the SMTP intake parsed it and as a route builds its message from it.

It lives in the delivery core, not beside the parser: the routes use it
without depending on the SMTP edge.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    filename: str  # a safe base name, fit for a download header and a mail client
    content_type: str
    data: bytes
    original_filename: str | None = None  # as the DPI sent it; kept sealed, never used as a path
