from myhug.runtime import Gateway, Running
from myhug.directory.service import DpiCredentials
from tests.conftest import Directory
from tests.helpers import message, send, eventually, count
from tests.webclient import WebClient
from tests.webmail_flow import login_sms
from myhug.mailbox.models import MailboxItem


async def test_smoke(running: Running, gateway: Gateway, dpi: DpiCredentials, directory: Directory) -> None:
    doctor = directory.hosted(consents=("P-1001",))
    code, text = await send(running, gateway, (dpi.username, dpi.password), message([doctor.address]), [doctor.address])
    assert code == 250
    await eventually(lambda: count(gateway, MailboxItem) == 1)
    base = "http://{}:{}".format(*running.web_address)
    async with WebClient(base) as client:
        landed = await login_sms(client, gateway.settings.sms_outbox, doctor.login, doctor.password)
        assert landed == "/documents"
        page = await client.get("/documents")
        print(page.text)
        assert "Lettre de sortie de Jean Exemple" in page.text
