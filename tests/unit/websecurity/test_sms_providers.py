"""SMS providers behind one interface; the HTTP one against httpx's mock transport."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from myhug.websecurity.sms import AspsmsProvider, FileSmsProvider, SmsError


async def test_file_provider_appends_e164_tab_text_lines(tmp_path: Path) -> None:
    outbox = tmp_path / "sms" / "outbox.txt"
    provider = FileSmsProvider(outbox)
    await provider.send("+41791234567", "code 123456")
    await provider.send("+41787654321", "code 654321")
    assert outbox.read_text().splitlines() == ["+41791234567\tcode 123456", "+41787654321\tcode 654321"]


async def test_aspsms_posts_the_json_api_payload() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"StatusCode": "1", "StatusInfo": "OK"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    provider = AspsmsProvider("https://json.aspsms.com/SendSimpleTextSMS", "KEY", "secret", "myHUG", client)
    await provider.send("+41791234567", "code 123456")
    assert seen == [{"UserName": "KEY", "Password": "secret", "Originator": "myHUG",
                     "Recipients": ["+41791234567"], "MessageText": "code 123456"}]


@pytest.mark.parametrize(
    "response",
    [httpx.Response(500), httpx.Response(200, json={"StatusCode": "3", "StatusInfo": "Not enough credits"}),
     httpx.Response(200, content=b"not json")],
)
async def test_aspsms_failures_are_sms_errors(response: httpx.Response) -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: response))
    provider = AspsmsProvider("https://json.aspsms.com/SendSimpleTextSMS", "KEY", "secret", "myHUG", client)
    with pytest.raises(SmsError):
        await provider.send("+41791234567", "code")


async def test_aspsms_unreachable_is_an_sms_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    provider = AspsmsProvider("https://json.aspsms.com/x", "K", "s", "myHUG", httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    with pytest.raises(SmsError, match="unreachable"):
        await provider.send("+41791234567", "code")
