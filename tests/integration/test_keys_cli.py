"""`myhug key import` / `key list`: bound by address, pinned, and unusable keys refused with the reason."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select, update

from myhug.audit.models import AuditEvent
from myhug.components import Components
from myhug.config.settings import Settings
from myhug.crypto.openpgp import OpenPgp
from myhug.hin.keys import import_recipient_key
from myhug.hin.models import RecipientKey
from myhug.hin.route import choose_key
from tests.conftest import Directory
from tests.helpers import myhug, one_line_error
from tests.pgp_keys import make_keypair


def _file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / f"{name}.asc"
    path.write_bytes(data)
    return str(path)


def test_import_binds_the_key_to_the_physician_and_lists_it(settings: Settings, gateway: Components,
                                                             directory: Directory, tmp_path: Path) -> None:
    doctor = directory.hin()
    keypair = make_keypair(tmp_path / "k", doctor.address)
    out = myhug(settings, "key", "import", _file(tmp_path, "k", keypair.public)).stdout
    assert f"for {doctor.address} (personal, no expiry)" in out
    listing = myhug(settings, "key", "list").stdout
    assert doctor.address in listing and "usable" in listing
    again = myhug(settings, "key", "import", _file(tmp_path, "k", keypair.public), check=False)
    assert "already imported" in one_line_error(again)
    # Who can decrypt patient data changed: the trail says so, once, with the fingerprint and the operator.
    with gateway.db.reading() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.event == "key-imported")).all()
        assert event.actor == "cli" and event.physician_gln == doctor.gln
        assert json.loads(event.detail)["fingerprint"] in listing.replace(" ", "")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("expired", "expired"), ("revoked", "revoked"), ("sign_only", "no usable encryption subkey")],
)
def test_unusable_keys_are_refused_with_the_reason(settings: Settings, directory: Directory, tmp_path: Path,
                                                   kind: str, reason: str) -> None:
    doctor = directory.hin()
    options = {
        "expired": {"expire": "1d", "faked_time": "20200101T000000"},
        "revoked": {"revoked": True},
        "sign_only": {"sign_only": True},
    }[kind]
    keypair = make_keypair(tmp_path / kind, doctor.address, **options)  # type: ignore[arg-type]
    result = myhug(settings, "key", "import", _file(tmp_path, kind, keypair.public), check=False)
    assert reason in one_line_error(result)
    assert "no recipient keys" in myhug(settings, "key", "list").stdout


def test_key_for_an_unknown_address_or_garbage_is_refused(settings: Settings, tmp_path: Path) -> None:
    stranger = make_keypair(tmp_path / "s", "stranger@hin.ch")
    assert "no physician with HIN address stranger@hin.ch" in one_line_error(
        myhug(settings, "key", "import", _file(tmp_path, "s", stranger.public), check=False))
    assert "no OpenPGP public key" in one_line_error(
        myhug(settings, "key", "import", _file(tmp_path, "g", b"garbage"), check=False))
    assert "no such key file" in one_line_error(myhug(settings, "key", "import", str(tmp_path / "none.asc"), check=False))


def test_domain_gateway_key(settings: Settings, tmp_path: Path) -> None:
    keypair = make_keypair(tmp_path / "d", "gateway@hin.ch")
    out = myhug(settings, "key", "import", _file(tmp_path, "d", keypair.public), "--domain", "hin.ch").stdout
    assert "for hin.ch (domain" in out


def test_export_gateway_prints_one_stable_signing_key(settings: Settings, tmp_path: Path) -> None:
    first = myhug(settings, "key", "export-gateway")
    second = myhug(settings, "key", "export-gateway")
    assert first.stdout.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----") and first.stdout == second.stdout
    assert f"for receipts@{settings.mail.domain}" in first.stderr
    # What it prints is a public key for the gateway's address, and nothing secret.
    holder = make_keypair(tmp_path / "holder", "dr@hin.example")
    holder.pin(first.stdout.encode())
    assert "PRIVATE KEY" not in first.stdout
    listed = subprocess.run(["gpg", "--homedir", str(holder.home), "--batch", "--with-colons", "--list-keys",
                             f"receipts@{settings.mail.domain}"], capture_output=True, timeout=60, check=True)
    fingerprint = re.search(r"fingerprint (\w{40})", first.stderr).group(1)  # type: ignore[union-attr]
    assert f"fpr:::::::::{fingerprint}:" in listed.stdout.decode()


def test_replacement_and_removal_are_audited(settings: Settings, gateway: Components, directory: Directory,
                                             tmp_path: Path) -> None:
    doctor = directory.hin()
    old = make_keypair(tmp_path / "old", doctor.address)
    new = make_keypair(tmp_path / "new", doctor.address)
    myhug(settings, "key", "import", _file(tmp_path, "old", old.public))
    myhug(settings, "key", "import", _file(tmp_path, "new", new.public))
    with gateway.db.reading() as session:
        imported = [json.loads(e.detail) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.event == "key-imported").order_by(AuditEvent.seq))]
    assert imported[0]["replaces"] == [] and imported[1]["replaces"] == [imported[0]["fingerprint"]]
    removed = myhug(settings, "key", "remove", imported[0]["fingerprint"]).stdout
    assert imported[0]["fingerprint"] in removed
    listing = myhug(settings, "key", "list").stdout.replace(" ", "")
    assert imported[0]["fingerprint"] not in listing and imported[1]["fingerprint"] in listing
    with gateway.db.reading() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.event == "key-removed")).all()
    assert event.actor == "cli" and event.physician_gln == doctor.gln
    assert json.loads(event.detail)["fingerprint"] == imported[0]["fingerprint"]
    again = myhug(settings, "key", "remove", imported[0]["fingerprint"], check=False)
    assert "no imported key" in one_line_error(again)


def test_a_key_imported_on_one_node_reaches_another_nodes_keyring_at_first_use(
        gateway: Components, directory: Directory, tmp_path: Path) -> None:
    """Two nodes on one database, each with its own GnuPG home: the database is the one list of pinned keys."""
    doctor = directory.hin()
    physician_key = make_keypair(tmp_path / "physician", doctor.address)
    node_a = gateway.openpgp()
    with gateway.db.transaction() as session:
        fingerprint = import_recipient_key(session, node_a, physician_key.public).fingerprint
    node_b = OpenPgp(tmp_path / "node-b-gnupg")
    try:
        assert node_b.key(fingerprint) is None
        with gateway.db.reading() as session:
            assert choose_key(session, node_b, doctor.id, doctor.address) == (fingerprint, "personal key")
        assert node_b.key(fingerprint) is not None and node_b.key(fingerprint).usable  # type: ignore[union-attr]
        ciphertext = tmp_path / "out.asc"
        node_b.encrypt(io.BytesIO(b"Lettre de sortie\n"), ciphertext, fingerprint)  # trusted there too
        assert physician_key.decrypt(ciphertext.read_bytes()) == b"Lettre de sortie\n"
    finally:
        node_b.stop_agent()

    # A copy that is not the pinned key (a row tampered with) is never imported: the key is reported missing.
    other = make_keypair(tmp_path / "other", doctor.address)
    with gateway.db.transaction() as session:
        session.execute(update(RecipientKey).where(RecipientKey.fingerprint == fingerprint)
                        .values(public_key=other.public.decode()))
    node_c = OpenPgp(tmp_path / "node-c-gnupg")
    try:
        with gateway.db.reading() as session:
            chosen, why = choose_key(session, node_c, doctor.id, doctor.address)
        assert chosen is None and "missing from keyring" in why
        assert node_c.gpg.list_keys() == []
    finally:
        node_c.stop_agent()
