"""Which route a physician's documents take."""

from __future__ import annotations

from myhug.directory.models import Physician

HIN = "hin"
HOSTED = "hosted"


def choose_route(physician: Physician, hin_domains: list[str]) -> str:
    """HIN when the physician has an HIN identity and an address in an HIN domain; hosted otherwise."""
    if physician.channel == HIN and physician.hin_address:
        domain = physician.hin_address.rpartition("@")[2]
        if any(domain == d or domain.endswith("." + d) for d in hin_domains):
            return HIN
    return HOSTED
