"""The HIN route end to end against Postfix as a plain relay, in the same run, alternating rounds.

    sudo python bench/relay.py [--messages 300] [--concurrency 10] [--size 100000] [--workers 1,2] [--rounds 2]
                               [--database-url postgresql+psycopg://.../empty_db]

(`--database-url` must name an empty PostgreSQL database; by default SQLite in the temporary directory.)

Needs root and Debian's postfix package (`apt-get install postfix`): the bench
runs a private Postfix instance in a temporary directory (`postfix -c DIR`),
never the system's, and Postfix's `smtp-sink` as the next hop.

The same generator sends the same kind of submission (a `--size` PDF with the
DPI's metadata headers, to one HIN physician) over `--concurrency`
connections with STARTTLS to:
- Postfix, relaying to `smtp-sink` (the baseline; no AUTH, mynetworks);
- `myhug serve --workers N` (STARTTLS + AUTH), which parses, seals,
  commits, answers 250, then encrypts and signs (gpg), DKIM-signs and relays
  to the same `smtp-sink`; its receipts go to a second sink.

A run ends when the sink has every message. Figures: messages per second,
the gateway's as a ratio to Postfix's in the same round, the gain of N
workers over 1, and the gateway's CPU per document (its processes and their
gpg children). These machines are noisy: only same-run ratios count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from myhug.components import Components  # noqa: E402
from myhug.datadir import init_data_dir  # noqa: E402
from myhug.directory.identifiers import make_gln  # noqa: E402
from myhug.directory.service import HinIdentity, activate_hin_identity, add_dpi_client, set_consent  # noqa: E402
from myhug.dpi_client import Attachment, build_submission  # noqa: E402
from myhug.gateway.keys import import_recipient_key  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.pgp_keys import make_keypair  # noqa: E402

HIN_ADDRESS = "hans.mueller@hin.ch"
MASTER_SERVICES = """\
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


class Sink:
    """Postfix's smtp-sink, its running message counter read from its output."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(["/usr/sbin/smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{port}", "256"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.count = 0
        os.set_blocking(self.process.stdout.fileno(), False)  # type: ignore[union-attr]
        self._tail = b""

    def messages(self) -> int:
        chunk = self.process.stdout.read() or b""  # type: ignore[union-attr]
        self._tail = (self._tail + chunk)[-200:]
        found = re.findall(rb"mesg=(\d+)", self._tail)
        if found:
            self.count = int(found[-1])
        return self.count

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class PrivatePostfix:
    """A Postfix instance of its own in `directory`, listening on `port`, relaying everything to `relay_port`."""

    def __init__(self, directory: Path, port: int, relay_port: int, cert: Path, key: Path) -> None:
        self.directory = directory
        (directory / "queue").mkdir(parents=True)
        (directory / "data").mkdir()
        shutil.chown(directory / "data", "postfix")
        (directory / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {directory}/queue
data_directory = {directory}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench-relay.localhost
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtp_tls_security_level = none
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = {directory}/postfix.log
maillog_file_prefixes = {directory}
message_size_limit = 60000000
""")
        (directory / "master.cf").write_text(f"127.0.0.1:{port} inet n - n - - smtpd\n" + MASTER_SERVICES)
        subprocess.run(["postfix", "-c", str(directory), "set-permissions"], capture_output=True, check=False)
        subprocess.run(["postfix", "-c", str(directory), "start"], capture_output=True, check=True)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.directory), "stop"], capture_output=True, check=False)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its live descendants, waited-for children included."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    parents = {pid}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) in parents:
            parents.add(int(entry))
            total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    return total


async def send_all(port: int, raws: list[bytes], concurrency: int, cafile: Path,
                   credentials: tuple[str, str] | None) -> None:
    """The generator: `concurrency` connections with STARTTLS, each sending its share in turn."""
    context = ssl.create_default_context(cafile=str(cafile))
    shares = [raws[i::concurrency] for i in range(concurrency)]

    async def connection(share: list[bytes]) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=context, timeout=120)
        await client.connect()
        if credentials:
            await client.login(*credentials)
        for raw in share:
            code, text = (await client.sendmail("dpi@hug.localhost", [HIN_ADDRESS], raw))[0], ""
            assert not code, (code, text)
        await client.quit()

    await asyncio.gather(*(connection(share) for share in shares if share))


def wait_for(sink: Sink, target: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while sink.messages() < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"timeout: the sink has {sink.count} of {target} messages")
        time.sleep(0.05)


def setup_gateway(work: Path, hin_sink: int, receipt_sink: int) -> tuple[Path, tuple[str, str], dict[str, str]]:
    settings = init_data_dir(work / "gateway", smtp_listen=f"127.0.0.1:{free_port()}",
                             web_listen=f"127.0.0.1:{free_port()}", inbound_listen=f"127.0.0.1:{free_port()}")
    gateway = Components.from_settings(settings)
    keypair = make_keypair(work / "physician-gnupg", HIN_ADDRESS)
    with gateway.db.transaction() as session:
        dpi = add_dpi_client(session, "bench")
        physician = activate_hin_identity(session, HinIdentity(
            login_name="hmueller", gln=make_gln("760100000003"), mail=HIN_ADDRESS, given_name="Hans",
            surname="Müller"))
        set_consent(session, gateway.sealer.patient_ref("P-1"), physician, granted=True, actor="bench")
        import_recipient_key(session, gateway.openpgp(), keypair.public)
    gateway.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYHUG_") or k == "MYHUG_DATABASE__URL"}
    env.update({"MYHUG_RELAY__HIN_SMARTHOST": f"127.0.0.1:{hin_sink}",
                "MYHUG_RELAY__DPI_SMARTHOST": f"127.0.0.1:{receipt_sink}", "MYHUG_RELAY__TLS": "none",
                "PYTHONPATH": str(ROOT / "src")})
    return settings.data_dir, (dpi.username, dpi.password), env


def raws(count: int, size: int, tag: str) -> list[bytes]:
    pdf = b"%PDF-1.4\n" + os.urandom(size // 2).hex().encode()[: size - 9]
    return [build_submission(sender="dpi@hug.localhost", recipients=[HIN_ADDRESS], patient_id="P-1",
                             document_id=f"BENCH-{tag}-{n}", patient_name="Jean Exemple",
                             attachments=[Attachment("lettre.pdf", pdf)]).as_bytes() for n in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2", help="worker process counts to measure, e.g. 1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    if args.database_url:
        os.environ["MYHUG_DATABASE__URL"] = args.database_url
    if os.geteuid() != 0 or not shutil.which("postfix"):
        raise SystemExit("run as root with Debian's postfix installed: the bench starts a private Postfix instance")
    worker_counts = [int(n) for n in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="myhug-bench-relay-"))
    os.chmod(work, 0o755)
    hin_sink, receipt_sink = Sink(free_port()), Sink(free_port())
    data_dir, credentials, env = setup_gateway(work, hin_sink.port, receipt_sink.port)
    cert, key = data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem"
    postfix_port = free_port()
    postfix = PrivatePostfix(work / "postfix", postfix_port, hin_sink.port, cert, key)
    results: dict[str, list[float]] = {"postfix": []}
    cpu: dict[int, list[float]] = {n: [] for n in worker_counts}
    for n in worker_counts:
        results[f"gateway-{n}"] = []
    try:
        for round_number in range(args.rounds):
            targets = ["postfix", *[f"gateway-{n}" for n in worker_counts]]
            if round_number % 2:
                targets.reverse()
            for target in targets:
                batch = raws(args.messages, args.size, f"{round_number}-{target}")
                before = hin_sink.messages()
                if target == "postfix":
                    start = time.monotonic()
                    asyncio.run(send_all(postfix_port, batch, args.concurrency, cert, None))
                    wait_for(hin_sink, before + len(batch))
                    results[target].append(len(batch) / (time.monotonic() - start))
                else:
                    workers = int(target.split("-")[1])
                    port = free_port()
                    server = subprocess.Popen(
                        [sys.executable, "-m", "myhug.cli", "serve", "--data-dir", str(data_dir), "--workers",
                         str(workers)], env={**env, "MYHUG_SMTP__LISTEN": f"127.0.0.1:{port}"},
                        stdout=subprocess.DEVNULL, stderr=open(work / f"serve-{target}.log", "wb"))  # noqa: SIM115
                    log = work / f"serve-{target}.log"
                    try:
                        _wait_listening(port)
                        _wait_workers(log, workers)
                        cpu_before = tree_cpu(server.pid)
                        start = time.monotonic()
                        asyncio.run(send_all(port, batch, args.concurrency, cert, credentials))
                        wait_for(hin_sink, before + len(batch))
                        results[target].append(len(batch) / (time.monotonic() - start))
                        cpu[workers].append((tree_cpu(server.pid) - cpu_before) / len(batch) * 1000)
                    finally:
                        server.terminate()
                        server.wait(timeout=60)
                print(f"round {round_number + 1}/{args.rounds} {target:10s} {results[target][-1]:7.1f} msg/s",
                      file=sys.stderr)
    finally:
        postfix.stop()
        hin_sink.stop()
        receipt_sink.stop()
    report(results, cpu, worker_counts, args)


def _wait_listening(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("myhug serve did not start listening")


def _wait_workers(log: Path, workers: int, timeout: float = 60) -> None:
    """Until every worker child says it started (their start-up is not the gateway's throughput)."""
    deadline = time.monotonic() + timeout
    while len(re.findall(r"delivery worker \S+ started", log.read_text(errors="replace"))) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker processes did not start; see {log}")
        time.sleep(0.1)


def report(results: dict[str, list[float]], cpu: dict[int, list[float]], worker_counts: list[int],
           args: argparse.Namespace) -> None:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    postfix = mean(results["postfix"])
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{args.messages} messages of {args.size // 1000} kB over {args.concurrency} connections, "
          f"{args.rounds} alternated rounds, {database}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'postfix':18s} {postfix:8.1f} msg/s")
    for n in worker_counts:
        rate = mean(results[f"gateway-{n}"])
        print(f"{'gateway, ' + str(n) + ' worker' + ('s' if n > 1 else ''):18s} {rate:8.1f} msg/s   "
              f"ratio to Postfix {rate / postfix:.3f}   CPU {mean(cpu[n]):.0f} ms/document")
    if len(worker_counts) > 1:
        low, high = worker_counts[0], worker_counts[-1]
        gain = mean(results[f"gateway-{high}"]) / mean(results[f"gateway-{low}"])
        print(f"{high} workers vs {low}: {gain:.2f}x")


if __name__ == "__main__":
    main()
