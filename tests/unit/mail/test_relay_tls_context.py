"""The relay's TLS client context is made once per CA file, and again when the file is replaced."""

from __future__ import annotations

import os
from pathlib import Path

import trustme

from myhug.mail.relay import Smarthost


def test_one_context_per_ca_file_until_the_file_changes(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    smarthost = Smarthost("relay.hin.ch", 25, True, str(ca_file))
    first = smarthost.tls_context()
    assert smarthost.tls_context() is first
    assert first.verify_mode.name == "CERT_REQUIRED" and first.check_hostname
    trustme.CA().cert_pem.write_to_path(str(ca_file))  # the operator replaces the CA bundle
    stat = ca_file.stat()
    os.utime(ca_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert smarthost.tls_context() is not first


def test_the_system_store_context_is_shared_too() -> None:
    smarthost = Smarthost("relay.hin.ch", 25, True, None)
    assert smarthost.tls_context() is smarthost.tls_context()
