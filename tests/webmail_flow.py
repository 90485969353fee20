"""Webmail login steps shared by the integration and browser tests."""

from __future__ import annotations

from pathlib import Path

from tests.webclient import WebClient


def last_sms_code(outbox: Path, mobile: str = "+41791234567") -> str:
    lines = [line for line in outbox.read_text().splitlines() if line.startswith(mobile + "\t")]
    assert lines, f"no SMS to {mobile} in {outbox}"
    text = lines[-1].split("\t", 1)[1]
    return next(word for word in text.replace(".", " ").split() if word.isdigit() and len(word) == 6)


async def login_sms(client: WebClient, outbox: Path, login: str, password: str,
                    mobile: str = "+41791234567") -> str:
    """Password then SMS code; returns the path the login lands on."""
    csrf = await client.csrf_of("/login")
    page = await client.post("/login", {"login": login, "password": password}, csrf=csrf)
    assert page.status_code == 200 and "Code SMS" in page.text, page.text[:300]
    csrf = await client.csrf_of("/login/sms")
    page = await client.post("/login/sms", {"code": last_sms_code(outbox, mobile)}, csrf=csrf)
    assert page.status_code == 200, page.text[:300]
    return page.url.path
