"""How an HIN identity reaches the webmail (`hin.auth`): one provider per mode."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request

from myhug.config.settings import HinSettings, peer_in_networks
from myhug.directory.service import HinIdentity
from myhug.errors import ConfigError, MyhugError


class IdentityRefused(MyhugError):
    """The request carries no acceptable HIN identity; the message is for the log, not the page."""


class GroupAccountRefused(IdentityRefused):
    """A practice (HIN "Group") account: documents are addressed to a person, never to a shared account."""


class HinIdentityProvider(Protocol):
    def identify(self, request: Request) -> HinIdentity:
        """The HIN identity behind the request, or raise `IdentityRefused`."""
        ...


class HeaderIdentityProvider:
    """Identity headers set by the HIN access gateway, believed only from trusted peers.

    The TCP peer is what counts; `X-Forwarded-For` and the like are ignored.
    """

    def __init__(self, settings: HinSettings) -> None:
        self.settings = settings

    def identify(self, request: Request) -> HinIdentity:
        s = self.settings
        peer = request.client.host if request.client else None
        if not peer_in_networks(peer, s.trusted_proxies):
            raise IdentityRefused(f"HIN headers from untrusted peer {peer}")
        headers = request.headers
        usertype = headers.get(s.header_usertype, "")
        if usertype == "Group":
            raise GroupAccountRefused("HIN user type 'Group' (a practice account) is not accepted")
        if usertype != "Personal":
            raise IdentityRefused(f"HIN user type {usertype!r} is not Personal")
        values = {
            "login_name": headers.get(s.header_login_name, "").strip(),
            "gln": headers.get(s.header_gln, "").strip(),
            "mail": headers.get(s.header_mail, "").strip(),
        }
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise IdentityRefused(f"HIN identity incomplete: missing {', '.join(missing)}")
        return HinIdentity(
            login_name=values["login_name"], gln=values["gln"], mail=values["mail"],
            given_name=header_text(headers.get(s.header_given_name, "")).strip(),
            surname=header_text(headers.get(s.header_surname, "")).strip(),
        )


def header_text(value: str) -> str:
    """A header's text, read as UTF-8 when its bytes are UTF-8, else as Latin-1.

    HTTP header values reach Starlette as Latin-1 (RFC 9110's historical
    charset), so a name the access gateway sent in UTF-8 ("Anaïs") arrives as
    "AnaÃ¯s". Its bytes are taken back and decoded as UTF-8; a value that is
    not valid UTF-8 was Latin-1 all along and stays as it is.
    """
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def identity_provider(settings: HinSettings) -> HinIdentityProvider:
    if settings.auth == "header":
        return HeaderIdentityProvider(settings)
    # The interface is ready for them; the implementations are not written yet.
    raise ConfigError(f"hin.auth: mode {settings.auth!r} is not available in this version; use 'header'")
