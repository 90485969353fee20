"""SMS providers for login codes, chosen by `sms.provider`."""

from __future__ import annotations

import asyncio
import fcntl
import logging
from pathlib import Path
from typing import Protocol

import httpx

from myhug.config.settings import Settings
from myhug.errors import TemporaryFailure

log = logging.getLogger(__name__)


class SmsError(TemporaryFailure):
    """The provider did not take the message."""


class SmsProvider(Protocol):
    async def send(self, to_e164: str, text: str) -> None: ...


class FileSmsProvider:
    """Appends `E164<TAB>text` lines to a file (development and tests)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, to_e164: str, text: str) -> None:
        await asyncio.to_thread(self._append, f"{to_e164}\t{text}\n".encode())

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as outbox:
            fcntl.flock(outbox, fcntl.LOCK_EX)  # several processes may append; the lock may wait
            outbox.write(line)
            outbox.flush()


class ConsoleSmsProvider:
    """Prints the SMS on standard output (a developer's terminal only)."""

    async def send(self, to_e164: str, text: str) -> None:
        print(f"[SMS to {to_e164}] {text}", flush=True)  # noqa: T201  (this provider's job)


class AspsmsProvider:
    """ASPSMS JSON API over HTTPS (Swiss provider)."""

    def __init__(self, url: str, userkey: str, password: str, originator: str,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.userkey = userkey
        self.password = password
        self.originator = originator
        self.client = client

    async def send(self, to_e164: str, text: str) -> None:
        payload = {
            "UserName": self.userkey,
            "Password": self.password,
            "Originator": self.originator,
            "Recipients": [to_e164],
            "MessageText": text,
        }
        try:
            if self.client is not None:
                response = await self.client.post(self.url, json=payload, timeout=15)
            else:
                async with httpx.AsyncClient() as client:
                    response = await client.post(self.url, json=payload, timeout=15)
        except httpx.HTTPError as exc:
            raise SmsError(f"SMS provider unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise SmsError(f"SMS provider answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise SmsError("SMS provider answered with invalid JSON") from None
        if str(body.get("StatusCode")) != "1":
            raise SmsError(f"SMS provider refused the message: {body.get('StatusInfo', 'unknown')}")


def sms_provider(settings: Settings) -> SmsProvider:
    """The provider named by `sms.provider`."""
    if settings.sms.provider == "console":
        return ConsoleSmsProvider()
    if settings.sms.provider == "aspsms":
        return AspsmsProvider(settings.sms.aspsms_url, settings.sms.aspsms_userkey,
                              settings.sms.aspsms_password.get_secret_value(), settings.sms.originator)
    return FileSmsProvider(settings.sms_outbox)
