"""`myhug ...` as an operator runs it: real subprocesses against a real data dir."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from myhug.components import Components
from myhug.config.settings import Settings
from myhug.directory.service import DpiCredentials
from tests.conftest import Directory
from tests.helpers import myhug, one_line_error


def test_init_creates_keys_with_private_modes(tmp_path: Path) -> None:
    data = tmp_path / "d"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYHUG_")}
    result = subprocess.run([sys.executable, "-m", "myhug.cli", "init", "--data-dir", str(data)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    for path in ("myhug.toml", "tls/cert.pem", "tls/key.pem", "dkim/private.pem", "keys/master.json", "myhug.db"):
        assert (data / path).exists(), path
    for secret in ("tls/key.pem", "dkim/private.pem", "keys/master.json"):
        assert (data / secret).stat().st_mode & 0o077 == 0, secret
    before = (data / "keys/master.json").read_bytes()
    rerun = subprocess.run([sys.executable, "-m", "myhug.cli", "init", "--data-dir", str(data)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0
    assert (data / "keys/master.json").read_bytes() == before  # never overwritten


def test_dpi_add_client_prints_credentials_once(settings: Settings) -> None:
    out = myhug(settings, "dpi", "add-client", "DPI-Main").stdout.splitlines()
    assert out[0] == "username: dpi-main"
    assert out[1].startswith("password: ") and len(out[1]) > 20
    assert out[2].startswith("api token: ") and len(out[2]) > 30
    again = myhug(settings, "dpi", "add-client", "DPI-Main", check=False)
    assert "already exists" in one_line_error(again)


def test_physician_add_sms_mode_prints_login_and_temporary_password(settings: Settings) -> None:
    out = myhug(settings, "physician", "add", "--gln", "7601000000019", "--name", "Marie Dupont",
                "--mobile", "079 123 45 67", "--specialty", "1014").stdout
    assert "login: dupont.m" in out
    assert "temporary password: " in out
    assert "status registered" in out


def test_physician_add_hin_mode(settings: Settings) -> None:
    out = myhug(settings, "physician", "add", "--gln", "7601000000019", "--name", "Hans Müller",
                "--hin-address", "hans.mueller@hin.ch").stdout
    assert "hin channel" in out and "hans.mueller@hin.ch" in out
    assert "password" not in out


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["physician", "add", "--gln", "7601000000018", "--name", "X Y", "--mobile", "0791234567"], "check digit"),
        (["physician", "add", "--gln", "7601000000019", "--name", "X Y", "--mobile", "022 372 62 01"], "not a mobile"),
        (["physician", "add", "--gln", "7601000000019", "--name", "X Y", "--mobile", "0791234567", "--specialty", "42"], "specialty"),
        (["consent", "grant", "P-1", "7601000000019"], "no physician"),
        (["consent", "grant", "P 1", "7601000000019"], "invalid patient id"),
        (["queue", "retry", "NOSUCHID"], "no delivery or submission"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_reason(settings: Settings, args: list[str], reason: str) -> None:
    assert reason in one_line_error(myhug(settings, *args, check=False))


def test_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "myhug.cli", "queue", "list", "--data-dir", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60)
    assert "myhug init" in one_line_error(result)


def test_bad_config_value_stops_with_the_key_named(settings: Settings) -> None:
    env = {**os.environ, "MYHUG_SMTP__LISTEN": "not-a-port"}
    result = subprocess.run([sys.executable, "-m", "myhug.cli", "queue", "list", "--data-dir", str(settings.data_dir)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert "smtp.listen" in one_line_error(result)


def test_consent_grant_revoke_queue_list_and_audit_verify(settings: Settings) -> None:
    myhug(settings, "physician", "add", "--gln", "7601000000019", "--name", "Marie Dupont", "--mobile", "0791234567")
    assert "granted" in myhug(settings, "consent", "grant", "P-1001", "7601000000019").stdout
    assert "revoked" in myhug(settings, "consent", "revoke", "P-1001", "7601000000019").stdout
    assert "Mail queue is empty" in myhug(settings, "queue", "list").stdout
    assert "audit chain OK: 3 events verified" in myhug(settings, "audit", "verify").stdout


def test_audit_verify_fails_on_tampering(settings: Settings) -> None:
    myhug(settings, "physician", "add", "--gln", "7601000000019", "--name", "Marie Dupont", "--mobile", "0791234567")
    myhug(settings, "consent", "grant", "P-1001", "7601000000019")
    from myhug.db.session import Database

    db = Database(settings.database_url)
    with db.transaction() as session:
        session.execute(text("UPDATE audit_event SET actor = 'x' WHERE seq = 2"))
    db.dispose()
    assert "BROKEN at event 2" in one_line_error(myhug(settings, "audit", "verify", check=False))


def test_dkim_dns_record_loads_in_a_zone_parser_and_verifies_a_signature(settings: Settings) -> None:
    import dkim
    import dns.zone

    from myhug.crypto.dkim import DkimSigner

    out = myhug(settings, "dkim", "dns").stdout
    assert "v=DKIM1; k=rsa; p=" in out
    assert all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', out))  # each DNS string fits
    zone = dns.zone.from_text("$ORIGIN myhug.localhost.\n@ 3600 IN SOA ns hostmaster 1 7200 900 1209600 3600\n"
                              "@ 3600 IN NS ns\n" + out, origin="myhug.localhost.", relativize=False)
    [txt] = zone.find_rdataset("myhug._domainkey.myhug.localhost.", "TXT")
    record = b"".join(txt.strings)
    assert record.startswith(b"v=DKIM1; k=rsa; p=") and len(record) > 255
    signed = DkimSigner(settings.dkim_key_file, "myhug.localhost", "myhug").sign(
        b"From: receipts@myhug.localhost\r\nTo: a@hin.ch\r\nSubject: x\r\n\r\nbody\r\n")
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record
                       if name == b"myhug._domainkey.myhug.localhost." else b"")


def test_master_key_rotation_rewraps_and_documents_stay_readable(settings: Settings) -> None:
    from myhug.blobs.store import Sealer
    from myhug.crypto.envelope import Keyring
    from myhug.db.session import Database

    db = Database(settings.database_url)
    with db.transaction() as session:
        blob = Sealer(Keyring.load(settings.master_key_file)).seal(session, b"lettre de sortie")
        blob_id = blob.id
    out = myhug(settings, "master-key", "rotate").stdout
    assert "version 2 is current; 1 data keys re-wrapped" in out
    keyring = Keyring.load(settings.master_key_file)
    with db.transaction() as session:
        assert Sealer(keyring).open_id(session, blob_id) == b"lettre de sortie"
    db.dispose()


def test_staff_actions_on_the_cli_are_audited(settings: Settings) -> None:
    myhug(settings, "physician", "add", "--gln", "7601000000019", "--name", "Marie Dupont", "--mobile", "0791234567")
    assert "suspended" in myhug(settings, "physician", "suspend", "7601000000019").stdout
    assert "already suspended" in one_line_error(myhug(settings, "physician", "suspend", "7601000000019", check=False))
    assert "status registered" in myhug(settings, "physician", "reactivate", "7601000000019").stdout
    out = myhug(settings, "physician", "reset-password", "7601000000019").stdout
    assert "temporary password: " in out
    assert "ends in 21" in myhug(settings, "physician", "set-mobile", "7601000000019", "078 765 43 21").stdout
    assert "not a mobile" in one_line_error(myhug(settings, "physician", "set-mobile", "7601000000019", "022 372 62 01", check=False))
    export = myhug(settings, "audit", "export", "--format", "ndjson").stdout.splitlines()
    import json

    events = [json.loads(line)["subtype"][-1]["code"] for line in export]  # the gateway's own name comes last
    assert events == ["registered", "suspended", "reactivated", "password-reset", "mobile-changed"]
    bundle = json.loads(myhug(settings, "audit", "export", "--format", "fhir").stdout)
    assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) == 5
    assert all(e["resource"]["agent"][0]["who"]["identifier"]["value"] == "cli" for e in bundle["entry"])


def test_queue_list_names_the_submission_id_of_the_250_reply_and_retry_takes_either(
    settings: Settings, gateway: Components, directory: Directory, dpi: DpiCredentials
) -> None:
    from tests.helpers import accept_directly

    doctor = directory.hosted(consents=("P-1001",))
    accepted = accept_directly(gateway, doctor.address)
    [entry] = gateway.queue().entries()
    listing = myhug(settings, "queue", "list").stdout
    assert accepted.submission_id in listing and entry.id in listing and "-Submission-" in listing
    by_submission = myhug(settings, "queue", "retry", accepted.submission_id.lower()).stdout
    assert f"delivery {entry.id} is queued, due now" in by_submission
    assert f"delivery {entry.id} is queued" in myhug(settings, "queue", "retry", entry.id).stdout
