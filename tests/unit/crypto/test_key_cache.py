"""Key lookups run `gpg --list-keys` once while the keyring is unchanged, and again after an import."""

from __future__ import annotations

from pathlib import Path

from myhug.crypto.openpgp import OpenPgp
from tests.pgp_keys import make_keypair


def test_a_lookup_is_cached_until_the_keyring_changes(tmp_path: Path) -> None:
    pgp = OpenPgp(tmp_path / "gw")
    first = make_keypair(tmp_path / "a", "a@hin.ch")
    second = make_keypair(tmp_path / "b", "b@hin.ch")
    try:
        info = pgp.import_key(first.public)
        calls: list[object] = []
        listing = pgp.gpg.list_keys

        def counted(*args: object, **kwargs: object) -> object:
            calls.append(args)
            return listing(*args, **kwargs)  # type: ignore[arg-type]

        pgp.gpg.list_keys = counted  # type: ignore[method-assign]
        for _ in range(5):
            found = pgp.key(info.fingerprint)
            assert found is not None and found.usable and found.addresses == ["a@hin.ch"]
        assert len(calls) == 1
        # Another process imports a key (a second OpenPgp on the same home plays `myhug key import`).
        OpenPgp(tmp_path / "gw").import_key(second.public)
        assert pgp.key(info.fingerprint) is not None
        assert len(calls) == 2  # the keyring changed: listed again
        assert pgp.key("0" * 40) is None and pgp.key("0" * 40) is None
        assert len(calls) == 3  # an unknown key is remembered as unknown too
    finally:
        pgp.stop_agent()
