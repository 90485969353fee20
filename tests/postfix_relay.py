"""A real Postfix on loopback, as the HIN side's relay in front of a sink: an instance of its own (its own
config, queue and log directories under the test's tmp dir), started and stopped with `postfix -c DIR`.

Postfix's daemons need root (they drop to the `postfix` user); without root or without Postfix the tests
that use it are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port


def available() -> bool:
    return shutil.which("postfix") is not None and os.geteuid() == 0 and Path("/etc/postfix/master.cf").exists()


@contextmanager
def postfix_relay(next_hop: str, cert_file: Path, key_file: Path,
                  relay_domains: str = "hin.ch") -> Iterator[tuple[int, Path]]:
    """A Postfix accepting mail for `relay_domains` on a free loopback port (STARTTLS with `cert_file`) and
    passing it on to `next_hop` (host:port); yields (port, its directory)."""
    if not available():
        pytest.skip("needs Postfix and root")
    # Its own directory, which the `postfix` user can reach (pytest's tmp dirs are root's alone).
    directory = Path(tempfile.mkdtemp(prefix="myhug-postfix-"))
    directory.chmod(0o755)
    shutil.copy(cert_file, directory / "cert.pem")
    shutil.copy(key_file, directory / "key.pem")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    etc, spool, data = directory / "etc", directory / "spool", directory / "data"
    for path in (etc, spool, data):
        path.mkdir(parents=True)
    shutil.chown(data, "postfix")
    port = free_port()
    (etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
myhostname = relay.hin.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains = {relay_domains}
relayhost = [{next_hop.rsplit(':', 1)[0]}]:{next_hop.rsplit(':', 1)[1]}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
maillog_file = {directory}/maillog
maillog_file_prefixes = {directory}
smtpd_tls_cert_file = {cert_file}
smtpd_tls_key_file = {key_file}
smtpd_tls_security_level = may
smtp_tls_security_level = may
smtpd_client_restrictions =
message_size_limit = 0
""")
    master = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line.startswith("smtp ") and len(fields) >= 8 and fields[1] == "inet":
            line = f"127.0.0.1:{port} inet n - n - - smtpd"
        elif line[:1].isalpha() and len(fields) >= 8:
            fields[4] = "n"  # no chroot: the queue is in the test's directory
            line = " ".join(fields)
        master.append(line)
    (etc / "master.cf").write_text("\n".join(master) + "\n")
    started = subprocess.run(["postfix", "-c", str(etc), "start"], capture_output=True, text=True, check=False)
    assert started.returncode == 0, started.stderr + (directory / "maillog").read_text(errors="replace") \
        if (directory / "maillog").exists() else started.stderr
    try:
        deadline = time.monotonic() + 20
        import socket

        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "Postfix did not start listening"
                time.sleep(0.1)
        yield port, directory
    finally:
        subprocess.run(["postfix", "-c", str(etc), "stop"], capture_output=True, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def log(directory: Path) -> str:
    path = directory / "maillog"
    return path.read_text(errors="replace") if path.exists() else ""
