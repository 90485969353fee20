"""HIN identity login: believed only from trusted peers, only for Personal identities."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from myhug.audit.models import AuditEvent
from myhug.components import Components
from myhug.directory.identifiers import make_gln
from myhug.directory.models import Physician
from myhug.directory.service import register_physician
from myhug.supervisor import Running
from tests.helpers import web_base as base
from tests.hin_proxy import hin_headers, hin_proxy
from tests.webclient import WebClient

GLN = make_gln("760100000777")




def physicians(gateway: Components) -> list[Physician]:
    with gateway.db.transaction() as session:
        return list(session.scalars(select(Physician)))


async def test_first_hin_login_through_the_access_gateway_creates_and_activates(running: Running, gateway: Components) -> None:
    async with hin_proxy(base(running), hin_headers(GLN)) as proxy, WebClient(proxy) as client:
        page = await client.get("/hin/login")
        assert page.status_code == 200 and page.url.path == "/documents", page.text[:300]
        assert "Dr Marie Dupont" in page.text
        again = await client.get("/hin/login")
        assert again.url.path == "/documents"
    [physician] = physicians(gateway)
    assert (physician.gln, physician.channel, physician.status) == (GLN, "hin", "activated")
    assert physician.hin_address == "marie.dupont@hin.ch" and physician.password_hash is None
    # BALP Login as for an SMS login: the physician's GLN, and the address the gateway saw (the proxy's).
    with gateway.db.reading() as session:
        events = {e.event: e for e in session.scalars(select(AuditEvent).where(AuditEvent.physician_gln == GLN))}
    for name in ("login", "activated"):
        assert events[name].actor == "web:127.0.0.1", (name, events[name].actor)


async def test_pre_registered_physician_is_matched_by_gln_not_duplicated(running: Running, gateway: Components) -> None:
    with gateway.db.transaction() as session:
        register_physician(session, gln=GLN, given_name="Marie", family_name="Dupont",
                           hin_address="marie.dupont@hin.ch", specialties=["1014"], actor="test")
    async with hin_proxy(base(running), hin_headers(GLN)) as proxy, WebClient(proxy) as client:
        assert (await client.get("/hin/login")).url.path == "/documents"
    [physician] = physicians(gateway)
    assert physician.status == "activated" and [s.code for s in physician.specialties] == ["1014"]


async def test_same_headers_from_an_untrusted_peer_are_refused(running: Running, gateway: Components) -> None:
    async with WebClient(base(running), local_address="127.0.0.2") as client:
        page = await client.get("/hin/login", headers={**hin_headers(GLN), "X-Forwarded-For": "127.0.0.1"})
    assert page.status_code == 403 and "identité HIN" in page.text
    assert physicians(gateway) == []


async def test_non_personal_hin_identity_is_refused(running: Running, gateway: Components) -> None:
    async with hin_proxy(base(running), hin_headers(GLN, usertype="Group")) as proxy, WebClient(proxy) as client:
        page = await client.get("/hin/login")
    assert page.status_code == 403
    assert physicians(gateway) == []


async def test_incomplete_or_invalid_identity_is_refused(running: Running, gateway: Components) -> None:
    async with hin_proxy(base(running), hin_headers("7601000000018")) as proxy, WebClient(proxy) as client:
        page = await client.get("/hin/login")
    assert page.status_code == 403 and "Traceback" not in page.text
    assert physicians(gateway) == []


async def test_each_refusal_says_what_happened_and_whom_to_call(running: Running, gateway: Components) -> None:
    """A practice account, an invalid GLN and a suspended account each get their own message, with the support."""
    pages = {}
    for case, headers in [("group", hin_headers(GLN, usertype="Group")), ("gln", hin_headers("7601000000018")),
                          ("suspended", hin_headers(GLN))]:
        if case == "suspended":
            with gateway.db.transaction() as session:
                physician = register_physician(session, gln=GLN, given_name="Marie", family_name="Dupont",
                                               hin_address="marie.dupont@hin.ch", specialties=[], actor="test")
                physician.physician.status = "suspended"
        async with hin_proxy(base(running), headers) as proxy, WebClient(proxy) as client:
            page = await client.get("/hin/login")
        assert page.status_code == 403, case
        assert "+41 22 372 62 01" in page.text and "myhug@hcuge.ch" in page.text, case
        pages[case] = page.text
    assert "comptes de cabinet" in pages["group"] and "identité HIN personnelle" in pages["group"]
    assert "GLN transmis par votre identité HIN n’est pas valide" in pages["gln"]
    assert "chiffre de contrôle erroné" in pages["gln"]
    assert "invalid GLN" not in pages["gln"] and "check digit" not in pages["gln"]  # French only
    assert "Votre compte myHUG est suspendu" in pages["suspended"]


async def test_the_home_page_logs_an_hin_physician_in_at_once_and_logout_offers_hin_again(
    running: Running, gateway: Components
) -> None:
    async with hin_proxy(base(running), hin_headers(GLN)) as proxy, WebClient(proxy) as client:
        home = await client.get("/")
        assert home.url.path == "/documents" and "connecté·e avec votre identité HIN" in home.text
        csrf = await client.csrf_of("/logout")
        # The access gateway passes requests on under another Host: its origin must be named to post forms.
        refused = await client.post("/logout", {}, csrf=csrf)
        assert refused.status_code == 403
        gateway.settings.web.allowed_origins = [proxy]
        out = await client.post("/logout", {}, csrf=csrf)
        assert out.url.path == "/login" and "Se reconnecter avec HIN" in out.text
        # Logging out means out: the login page does not log the physician back in by itself.
        assert "Mes documents" not in out.text
    async with WebClient(base(running)) as client:  # no access gateway, no identity: the usual login
        assert (await client.get("/")).url.path == "/login"


async def test_a_practice_account_at_the_home_page_gets_the_same_refusal_as_at_hin_login(
    running: Running, gateway: Components
) -> None:
    async with hin_proxy(base(running), hin_headers(GLN, usertype="Group")) as proxy, WebClient(proxy) as client:
        home = await client.get("/")
    assert home.status_code == 403 and "comptes de cabinet" in home.text
    assert 'name="password"' not in home.text  # not the SMS login form


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
async def test_names_sent_in_utf8_or_latin1_are_stored_as_written(
    running: Running, gateway: Components, encoding: str
) -> None:
    identity: dict[str, Any] = hin_headers(GLN)
    identity["X-HIN-GIVEN-NAME"] = "Anaïs".encode(encoding)
    identity["X-HIN-SURNAME"] = "Müller-Gonçalves".encode(encoding)
    async with hin_proxy(base(running), identity) as proxy, WebClient(proxy) as client:
        page = await client.get("/hin/login")
    assert page.status_code == 200, page.text[:300]
    [physician] = physicians(gateway)
    assert (physician.given_name, physician.family_name) == ("Anaïs", "Müller-Gonçalves")
