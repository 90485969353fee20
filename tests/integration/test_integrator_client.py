"""The client of docs/integrator.md, run as written against a gateway: a DPI developer can build on it.

The page's Python block is executed as it stands; the test then submits
through it and checks every kind of answer it promises to handle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from myhug.components import Components
from myhug.directory.service import DpiCredentials
from myhug.supervisor import Running
from tests.conftest import Directory
from tests.helpers import PDF, tls_context

PAGE = Path(__file__).resolve().parents[2] / "docs" / "integrator.md"


def client() -> dict[str, Any]:
    """The namespace of the page's "A complete client" code block."""
    section = PAGE.read_text().split("## A complete client", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no Python block under 'A complete client'"
    namespace: dict[str, Any] = {"__name__": "integrator_client"}
    exec(compile(code.group(1), str(PAGE), "exec"), namespace)  # noqa: S102  (our own documentation)
    return namespace


async def test_the_documented_client_submits_is_idempotent_and_raises_refused_on_a_5xx(
    running: Running, gateway: Components, dpi: DpiCredentials, directory: Directory
) -> None:
    import asyncio

    ns = client()
    doctor = directory.hosted(consents=("P-1001",))
    stranger = directory.hosted(family_name="Autre")  # no consent for P-1001
    assert running.smtp_address is not None
    host, port = running.smtp_address

    def send(recipient: str, document_id: str) -> str:
        message = ns["document_message"]("dpi@hug.localhost", recipient, "P-1001", document_id, PDF, "lettre.pdf",
                                          patient_name="Jean Exemple", document_type="discharge-letter")
        result: str = ns["submit"](host, port, dpi.username, dpi.password, message, context=tls_context(gateway),
                                   attempts=2, pause=0.1)
        return result

    queue_id = await asyncio.to_thread(send, doctor.address, "DOC-INT-1")
    assert re.fullmatch(r"[0-9A-F]{20}", queue_id), queue_id
    assert await asyncio.to_thread(send, doctor.address, "DOC-INT-1") == queue_id  # a retry is harmless
    with pytest.raises(ns["Refused"], match=r"^550 5\.7\.1"):
        await asyncio.to_thread(send, stranger.address, "DOC-INT-2")
    with pytest.raises(ns["Refused"], match=r"^550 5\.1\.1"):
        await asyncio.to_thread(send, "nobody@myhug.localhost", "DOC-INT-3")
