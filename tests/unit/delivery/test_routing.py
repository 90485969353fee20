"""Which route a physician's documents take, and which key the HIN route encrypts to (fake gpg)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from myhug.components import Components
from myhug.crypto.openpgp import KeyInfo
from myhug.db.base import utcnow
from myhug.delivery.routing import HIN, HOSTED, choose_route
from myhug.directory.models import Physician
from myhug.hin.models import RecipientKey
from myhug.hin.route import choose_key
from tests.conftest import Directory


@pytest.mark.parametrize(("channel", "address", "route"), [
    ("hin", "a@hin.ch", HIN),
    ("hin", "a@praxis.hin.ch", HIN),  # a subdomain of an HIN domain
    ("hin", "a@nothin.ch", HOSTED),  # not a subdomain: a look-alike
    ("hin", None, HOSTED),
    ("hosted", "a@hin.ch", HOSTED),  # the channel decides, not the address alone
])
def test_route_by_channel_and_hin_domain(channel: str, address: str | None, route: str) -> None:
    assert choose_route(Physician(channel=channel, hin_address=address), ["hin.ch"]) == route


@dataclass
class FakePgp:
    """The `OpenPgp.key` lookup, with keys that are usable or not."""

    keys: dict[str, str | None]  # fingerprint -> problem (None: usable)

    def key(self, fingerprint: str) -> KeyInfo | None:
        if fingerprint not in self.keys:
            return None
        return KeyInfo(fingerprint, [], [], None, self.keys[fingerprint])


def _pin(gateway: Components, fingerprint: str, kind: str, physician_id: int | None, address: str) -> None:
    with gateway.db.transaction() as session:
        session.add(RecipientKey(fingerprint=fingerprint, physician_id=physician_id, address=address, kind=kind,
                                 imported_at=utcnow()))


def _choose(gateway: Components, pgp: FakePgp, physician_id: int) -> tuple[str | None, str]:
    with gateway.db.reading() as session:
        physician = session.get(Physician, physician_id)
        assert physician is not None
        return choose_key(session, pgp, physician.id, physician.hin_address or "")  # type: ignore[arg-type]


def test_key_choice_personal_then_domain_then_none(gateway: Components, directory: Directory) -> None:
    doctor = directory.hin(address="hans@hin.ch")
    assert _choose(gateway, FakePgp({}), doctor.id) == (None, "no personal key")
    _pin(gateway, "D" * 40, "domain", None, "hin.ch")
    assert _choose(gateway, FakePgp({"D" * 40: None}), doctor.id) == ("D" * 40, "domain gateway key")
    _pin(gateway, "P" * 40, "personal", doctor.id, "hans@hin.ch")
    assert _choose(gateway, FakePgp({"P" * 40: None, "D" * 40: None}), doctor.id) == ("P" * 40, "personal key")
    # An expired personal key falls back to the domain key, and says why.
    fingerprint, why = _choose(gateway, FakePgp({"P" * 40: "expired", "D" * 40: None}), doctor.id)
    assert fingerprint == "D" * 40 and why == "domain gateway key"
    fingerprint, why = _choose(gateway, FakePgp({"P" * 40: "expired", "D" * 40: "revoked"}), doctor.id)
    assert fingerprint is None and "expired" in why and "revoked" in why
