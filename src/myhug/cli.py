"""`myhug ...`: the operator's command line (SPEC §2).

Every command exits non-zero with a one-line reason on bad input.

Over 500 lines, on purpose: each command is a short function that calls the
layer below, and the argument tree of every command is in one place, so
that `myhug --help` and this file read alike. Splitting it would spread one
table over several files.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from myhug.config.settings import (
    CONFIG_FILENAME,
    Settings,
    default_data_dir,
    load_settings,
)
from myhug.errors import MyhugError

log = logging.getLogger("myhug")


class UsageError(MyhugError):
    pass


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "config", None):
        return load_settings(Path(args.config))
    data_dir = Path(args.data_dir) if getattr(args, "data_dir", None) else default_data_dir()
    config_file = data_dir / CONFIG_FILENAME
    if not config_file.exists():
        raise UsageError(f"no {CONFIG_FILENAME} in {data_dir}; run `myhug init --data-dir {data_dir}` first")
    return load_settings(config_file)


def _gateway(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from myhug.components import Components

    return Components.from_settings(_settings(args))


# --- commands -----------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> None:
    from myhug.datadir import init_data_dir

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    settings = init_data_dir(data_dir)
    print(f"data dir ready: {settings.data_dir}")
    print(f"configuration:  {settings.data_dir / CONFIG_FILENAME}")
    print("next: `myhug dpi add-client NAME`, `myhug physician add ...`, then `myhug serve`")


def cmd_serve(args: argparse.Namespace) -> None:
    import shutil
    import tempfile

    from myhug.workerpool import WorkerPool, default_worker_count, die_with_parent, parent_waker

    multiprocess_env = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own (`myhug.metrics` reads it)

    parent = die_with_parent()  # a child of another `myhug serve`: stop with it
    settings = _settings(args)
    roles = [r.strip() for r in (args.role or "smtp,web,worker").split(",") if r.strip()]
    # Without --role, the delivery work goes to worker processes, one per core (--workers 0: one process).
    workers = args.workers if args.workers is not None else (0 if args.role else default_worker_count())
    location = ["--config", args.config] if args.config else (["--data-dir", args.data_dir] if args.data_dir else [])

    def child(role: str) -> list[str]:
        """The command of a child process that runs one role on this configuration."""
        return [sys.executable, "-m", "myhug.cli", "serve", "--role", role, "--workers", "0", *location]

    pool = None
    if workers > 0:
        if "worker" not in roles:
            raise UsageError("--workers starts delivery worker processes; it needs the worker role")
        roles.remove("worker")
        pool = WorkerPool(child("worker"), workers)
    # The SMTP intake in as many processes (smtp.processes; 0: one per core without --role, else one).
    intake_processes = settings.smtp.processes or (1 if args.role else default_worker_count())
    intake = None
    if intake_processes > 1 and "smtp" in roles and parent is None:
        intake = WorkerPool(child("smtp"), intake_processes - 1, kind="SMTP intake")
    metrics_dir = None
    if (pool is not None or intake is not None) and not os.environ.get(multiprocess_env):
        # Before prometheus-client is imported (Components below): this process and its children then
        # count in files there, and /metrics sums them. A fresh directory: stale counts would add up.
        metrics_dir = tempfile.mkdtemp(prefix="myhug-metrics-")
        os.environ[multiprocess_env] = metrics_dir
    if roles == ["worker"] and settings.queue.worker_niceness:
        os.nice(settings.queue.worker_niceness)  # before any thread: they and gpg inherit it
    from myhug.components import Components
    from myhug.datadir import upgrade_database
    from myhug.supervisor import serve_forever

    upgrade_database(settings)
    gateway = Components.from_settings(settings)
    try:
        asyncio.run(serve_forever(gateway, roles, pool, intake,
                                  on_accepted=parent_waker(parent) if parent is not None else None))
    finally:
        gateway.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def cmd_demo(args: argparse.Namespace) -> None:
    from myhug.demo import run_demo

    run_demo(Path(args.data_dir) if args.data_dir else None, keep_serving=not args.once)


def cmd_dpi_add_client(args: argparse.Namespace) -> None:
    from myhug.directory.service import add_dpi_client

    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        credentials = add_dpi_client(session, args.name, all_events=args.all_events)
    print(f"username: {credentials.username}")
    print(f"password: {credentials.password}")
    print(f"api token: {credentials.api_token}")
    print("(shown once; only hashes are stored)", file=sys.stderr)


def _split_name(name: str) -> tuple[str, str]:
    if "," in name:
        family, _, given = name.partition(",")
        return given.strip(), family.strip()
    parts = name.split()
    if not parts:
        raise UsageError("--name must not be empty")
    return " ".join(parts[:-1]), parts[-1]


def cmd_physician_add(args: argparse.Namespace) -> None:
    from myhug.directory.service import hosted_address, register_physician

    given, family = _split_name(args.name)
    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        registration = register_physician(
            session,
            gln=args.gln,
            given_name=given,
            family_name=family,
            hin_address=args.hin_address,
            mobile=args.mobile,
            email=args.email,
            specialties=args.specialty or [],
            actor="cli",
        )
        physician = registration.physician
        print(f"registered: {physician.display_name} (GLN {physician.gln}), {physician.channel} channel, status {physician.status}")
        if registration.temporary_password is not None:
            print(f"login: {physician.login}")
            print(f"temporary password: {registration.temporary_password}")
            print(f"address: {hosted_address(physician, gateway.settings.mail.domain)}")
            print("the account activates at the first login, when the password is changed", file=sys.stderr)
        else:
            print(f"address: {physician.hin_address}")
            print("the account activates at the first HIN login", file=sys.stderr)


def cmd_assistant_add(args: argparse.Namespace) -> None:
    from myhug.directory.delegation import register_assistant

    given, family = _split_name(args.name)
    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        registration = register_assistant(session, given_name=given, family_name=family, mobile=args.mobile,
                                          physician_glns=args.physician, email=args.email, actor="cli")
        assistant = registration.assistant
        print(f"registered assistant: {assistant.display_name}, linked to {', '.join(args.physician)}")
        print(f"login: {assistant.login}")
        print(f"temporary password: {registration.temporary_password}")
        print("the assistant changes the password at the first login (password + SMS code)", file=sys.stderr)


def _consent(args: argparse.Namespace, granted: bool) -> None:
    from myhug.directory.identifiers import IDENTIFIER, validate_gln
    from myhug.directory.service import find_by_gln, set_consent

    if not IDENTIFIER.fullmatch(args.patient_id):
        raise UsageError(f"invalid patient id {args.patient_id!r}")
    gln = validate_gln(args.gln)
    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        physician = find_by_gln(session, gln)
        if physician is None:
            raise UsageError(f"no physician with GLN {gln}")
        set_consent(session, gateway.sealer.patient_ref(args.patient_id), physician, granted=granted, actor="cli")
    print(f"consent {'granted' if granted else 'revoked'}: patient -> {physician.display_name} ({gln})")


def cmd_consent_grant(args: argparse.Namespace) -> None:
    _consent(args, True)


def cmd_consent_revoke(args: argparse.Namespace) -> None:
    _consent(args, False)


def cmd_queue_list(args: argparse.Namespace) -> None:
    from myhug.metrics import AGE_BUCKETS, queue_shape

    gateway = _gateway(args)
    entries = gateway.queue().entries(include_done=args.all)
    if not entries:
        print("Mail queue is empty")
        return
    print(f"{'-Queue ID-':<22}{'-Submission-':<22}{'-State-':<11}{'-Route-':<8}{'-Tries-':<8}"
          f"{'-Arrival Time-':<27}-Document- -Recipient-")
    for e in entries:
        print(f"{e.id:<22}{e.submission_id:<22}{e.state:<11}{e.route:<8}{e.attempts:<8}"
              f"{e.created_at:%Y-%m-%d %H:%M:%S %Z}    {e.document_id} {e.recipient}")
        if e.last_error:
            print(f"{'':<44}({e.last_error})")
    print(f"-- {len(entries)} deliveries")
    with gateway.db.reading() as session:
        shape = queue_shape(session)
    if shape:
        # Postfix qshape: what is still to deliver, by route and by minutes in the queue.
        labels = [label for _, label in AGE_BUCKETS]
        print("\n" + f"{'':<8}{'T':>6}" + "".join(f"{label:>10}" for label in labels))
        for route, buckets in sorted(shape.items()):
            print(f"{route:<8}{sum(buckets.values()):>6}" + "".join(f"{buckets[label]:>10}" for label in labels))


def cmd_queue_retry(args: argparse.Namespace) -> None:
    gateway = _gateway(args)
    try:
        made_due = gateway.queue().retry(args.id)
    except (LookupError, ValueError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    for delivery_id in made_due:
        print(f"delivery {delivery_id} is queued, due now")


def cmd_audit_verify(args: argparse.Namespace) -> None:
    from myhug.audit.trail import verify

    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        result = verify(session)
    if not result.ok:
        raise MyhugError(f"audit chain BROKEN at event {result.first_bad}: {result.reason}")
    print(f"audit chain OK: {result.checked} events verified")


def cmd_key_import(args: argparse.Namespace) -> None:
    from myhug.hin.keys import import_recipient_key

    gateway = _gateway(args)
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such key file: {path}")
    with gateway.db.transaction() as session:
        key = import_recipient_key(session, gateway.openpgp(), path.read_bytes(), domain=args.domain,
                                   smime_ca_file=gateway.settings.crypto.smime_ca_file or None)
    print(f"imported {'S/MIME certificate ' if key.envelope == 'smime' else ''}{key.fingerprint} for {key.address} "
          f"({key.kind}"
          + (f", expires {key.expires_at:%Y-%m-%d}" if key.expires_at else ", no expiry") + ")")


def cmd_key_remove(args: argparse.Namespace) -> None:
    from myhug.hin.keys import remove_recipient_key

    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        key = remove_recipient_key(session, gateway.openpgp(), args.fingerprint)
    print(f"removed {key.fingerprint} ({key.kind}, {key.address}); documents for it now follow relay.no_key_policy "
          "unless another key is usable")


def cmd_key_export_gateway(args: argparse.Namespace) -> None:
    gateway = _gateway(args)
    address = gateway.settings.mail.receipts_address
    if args.smime:
        from myhug.crypto.smime import gateway_identity

        identity = gateway_identity(gateway.settings.smime_dir, address)
        print(f"# myHUG gateway S/MIME signing certificate for {address}", file=sys.stderr)
        print(identity.pem, end="")
        return
    pgp = gateway.openpgp()
    fingerprint = pgp.signing_key(address)
    print(f"# myHUG gateway signing key for {address}\n# fingerprint {fingerprint}", file=sys.stderr)
    print(pgp.export_public(fingerprint), end="")


def cmd_key_list(args: argparse.Namespace) -> None:
    from myhug.hin.keys import list_recipient_keys

    gateway = _gateway(args)
    from myhug.crypto.smime import ca_bundle

    with gateway.db.transaction() as session:
        rows = list_recipient_keys(session, gateway.openpgp(), ca_bundle(gateway.settings.crypto.smime_ca_file or None))
    if not rows:
        print("no recipient keys")
        return
    for row in rows:
        print(f"{row.fingerprint}  {row.kind:<8} {row.address:<40} {row.status}")


def cmd_audit_export(args: argparse.Namespace) -> None:
    import json

    from myhug.audit.balp import AuditSource
    from myhug.audit.fhir import to_fhir
    from myhug.audit.trail import iter_events

    gateway = _gateway(args)
    source = AuditSource.of(gateway.settings)
    out = sys.stdout
    written = 0
    with gateway.db.transaction() as session:
        if args.format == "fhir":
            # A FHIR collection Bundle, streamed so that a large trail needs no memory.
            out.write('{"resourceType":"Bundle","type":"collection","entry":[')
        for event in iter_events(session, after=args.after):
            resource = json.dumps(to_fhir(event, source), ensure_ascii=False, separators=(",", ":"))
            if args.format == "fhir":
                out.write(("," if written else "") + '{"resource":' + resource + "}")
            else:
                out.write(resource + "\n")
            written += 1
            if written % 10000 == 0:
                print(f"exported {written} events...", file=sys.stderr)
        if args.format == "fhir":
            out.write("]}\n")
    print(f"exported {written} audit events", file=sys.stderr)


def _physician_action(args: argparse.Namespace, action: str) -> None:
    from myhug.directory import admin

    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        result = admin.apply(session, action, args.gln, actor="cli", mobile=getattr(args, "mobile", None))
    print(result.summary)
    if result.temporary_password:
        print(f"temporary password: {result.temporary_password}")


def cmd_physician_suspend(args: argparse.Namespace) -> None:
    _physician_action(args, "suspend")


def cmd_physician_reactivate(args: argparse.Namespace) -> None:
    _physician_action(args, "reactivate")


def cmd_physician_reset_password(args: argparse.Namespace) -> None:
    _physician_action(args, "reset-password")


def cmd_physician_set_mobile(args: argparse.Namespace) -> None:
    _physician_action(args, "set-mobile")


def cmd_physician_unlock(args: argparse.Namespace) -> None:
    from myhug.directory.admin import unlock_physician
    from myhug.directory.identifiers import validate_gln
    from myhug.directory.service import DirectoryError, find_by_gln

    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        physician = find_by_gln(session, validate_gln(args.gln))
        if physician is None:
            raise DirectoryError(f"no physician with GLN {args.gln}")
        locked = unlock_physician(session, physician, actor="cli")
        name = physician.display_name
    print(f"{'unlocked' if locked else 'was not locked'}: {name} ({args.gln})")


def cmd_staff_unlock(args: argparse.Namespace) -> None:
    from myhug.staffdesk.service import unlock_staff

    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        locked = unlock_staff(session, args.login)
    print(f"{'unlocked' if locked else 'was not locked'}: {args.login}")


def cmd_staff_add(args: argparse.Namespace) -> None:
    from myhug.staffdesk.service import add_staff

    gateway = _gateway(args)
    with gateway.db.transaction() as session:
        staff = add_staff(session, gateway.sealer, args.login, args.name or args.login)
    print(f"login: {staff.login}")
    print(f"password: {staff.password}")
    print(f"totp secret: {staff.totp_secret}")
    print(f"totp uri: {staff.provisioning_uri}")
    print("(shown once: enrol the secret in an authenticator app now)", file=sys.stderr)


def cmd_dkim_dns(args: argparse.Namespace) -> None:
    from myhug.crypto.keys import dkim_zone_record

    settings = _settings(args)
    print(dkim_zone_record(settings.mail.dkim_selector, settings.mail.domain, settings.dkim_key_file))


def cmd_master_key_rotate(args: argparse.Namespace) -> None:
    from myhug.blobs.store import Sealer
    from myhug.crypto.envelope import Keyring
    from myhug.db.session import Database

    settings = _settings(args)
    keyring = Keyring.load(settings.master_key_file)
    new_id = keyring.rotate()
    keyring.save(settings.master_key_file)  # saved first: blobs rewrapped below must stay readable
    db = Database(settings.database_url)
    with db.transaction() as session:
        moved = Sealer(keyring).rewrap(session)
    print(f"master key version {new_id} is current; {moved} data keys re-wrapped")


# --- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="myhug", description="myHUG gateway: DPI -> physicians, securely.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], None], help: str,
                parent: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:  # type: ignore[type-arg]
        p = (parent or sub).add_parser(name, help=help, description=help)
        p.add_argument("--data-dir", help="data dir (default $MYHUG_HOME or ./myhug-data)")
        p.add_argument("--config", help="configuration file (default <data dir>/myhug.toml)")
        p.set_defaults(func=func)
        return p

    def group(name: str, help: str) -> argparse._SubParsersAction:  # type: ignore[type-arg]
        p = sub.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

    command("init", cmd_init, "create a data dir: configuration, TLS certificate, DKIM key, master key, database")
    p = command("serve", cmd_serve, "run the SMTP submission server, the web server and the delivery workers")
    p.add_argument("--role", default=None,
                   help="comma-separated subset of smtp,web,worker (default: all; the worker role in processes of "
                        "its own, see --workers)")
    p.add_argument("--workers", type=int, default=None,
                   help="delivery worker processes to start (default: one per core without --role, none with it; "
                        "0 runs everything in this process)")
    p = command("demo", cmd_demo, "a first run on embedded defaults: demo physicians, consents and documents")
    p.add_argument("--once", action="store_true", help="exit after the demo instead of serving")

    dpi = group("dpi", "DPI clients")
    p = command("add-client", cmd_dpi_add_client, "create SMTP AUTH and API credentials for a DPI client", dpi)
    p.add_argument("name")
    p.add_argument("--all-events", action="store_true",
                   help="its audit feed holds every event (the hospital's audit repository); "
                        "by default only those of its own submissions")

    physician = group("physician", "physicians")
    p = command("add", cmd_physician_add, "register a physician", physician)
    p.add_argument("--gln", required=True, help="13-digit GLN with GS1 check digit")
    p.add_argument("--name", required=True, help='"Given Family" or "Family, Given"')
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--hin-address", help="HIN mode: the physician's HIN address")
    mode.add_argument("--mobile", help="SMS mode: mobile number (E.164 or Swiss national)")
    p.add_argument("--email", help="notification address")
    p.add_argument("--specialty", action="append", help="MedReg specialty code; repeatable")

    for name, func, help in (
        ("suspend", cmd_physician_suspend, "suspend an account: no login, no new documents"),
        ("reactivate", cmd_physician_reactivate, "lift a suspension"),
        ("reset-password", cmd_physician_reset_password, "issue a new temporary password (SMS mode)"),
        ("unlock", cmd_physician_unlock, "lift a login lockout (too many wrong passwords or codes)"),
    ):
        p = command(name, func, help, physician)
        p.add_argument("gln", metavar="GLN")
    p = command("set-mobile", cmd_physician_set_mobile, "replace the mobile number SMS codes go to", physician)
    p.add_argument("gln", metavar="GLN")
    p.add_argument("mobile", metavar="MOBILE")

    assistant = group("assistant", "practice assistants (MPA) who read for the physicians who link them")
    p = command("add", cmd_assistant_add, "register an assistant linked to physicians; prints login and "
                "temporary password once", assistant)
    p.add_argument("--name", required=True, help='"Given Family" or "Family, Given"')
    p.add_argument("--mobile", required=True, help="mobile number for the SMS codes (E.164 or Swiss national)")
    p.add_argument("--physician", required=True, action="append", metavar="GLN",
                   help="a physician who asked for the link; repeatable")
    p.add_argument("--email", help="address for the physicians' notifications, if they choose to share them")

    consent = group("consent", "designation + authorization of electronic sending")
    for name, func in (("grant", cmd_consent_grant), ("revoke", cmd_consent_revoke)):
        p = command(name, func, f"{name} designation and authorization", consent)
        p.add_argument("patient_id", metavar="PATIENT_ID")
        p.add_argument("gln", metavar="GLN")

    queue = group("queue", "the delivery queue")
    p = command("list", cmd_queue_list, "list pending, deferred and held deliveries", queue)
    p.add_argument("--all", action="store_true", help="include finished deliveries")
    p = command("retry", cmd_queue_retry, "make a deferred or held delivery due now", queue)
    p.add_argument("id", help="a delivery id, or the submission id of the DPI's `250 queued as <id>` reply")

    audit = group("audit", "the audit trail")
    command("verify", cmd_audit_verify, "check the tamper-evident chain", audit)
    p = command("export", cmd_audit_export, "export the trail as FHIR AuditEvent (Bundle or NDJSON) on stdout", audit)
    p.add_argument("--format", choices=["fhir", "ndjson"], default="fhir")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events after this sequence number")

    staff = group("staff", "staff of the registration desk (password + TOTP)")
    p = command("add", cmd_staff_add, "create a staff account; prints its password and TOTP secret once", staff)
    p.add_argument("login")
    p.add_argument("--name", help="display name")
    p = command("unlock", cmd_staff_unlock, "lift a staff member's login lockout", staff)
    p.add_argument("login")

    key = group("key", "recipient OpenPGP keys")
    p = command("import", cmd_key_import, "import a recipient's OpenPGP public key or PEM S/MIME certificate, pinned "
                "by fingerprint", key)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--domain", help="import as the gateway key of this HIN domain (fallback for its physicians)")
    command("list", cmd_key_list, "list recipient keys and whether they can be used", key)
    p = command("remove", cmd_key_remove, "stop encrypting to a recipient key (audited key-removed)", key)
    p.add_argument("fingerprint")
    p = command("export-gateway", cmd_key_export_gateway,
                "print the gateway's OpenPGP public key, which signs every HIN message (for physicians or HIN to pin)",
                key)
    p.add_argument("--smime", action="store_true", help="print the gateway's S/MIME signing certificate instead")

    dkim = group("dkim", "DKIM")
    command("dns", cmd_dkim_dns, "print the DNS TXT record to publish", dkim)

    master = group("master-key", "the key that seals documents at rest")
    command("rotate", cmd_master_key_rotate, "add a new master key version and re-wrap every data key", master)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",  # Postfix-style pid: several processes share the log
        stream=sys.stderr,
    )
    if not args.verbose:
        for noisy in ("mail.log", "aiosmtpd", "alembic", "uvicorn.error"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # aiosmtpd warns about its own use of a deprecated attribute at every AUTH.
    logging.getLogger("mail.log").addFilter(lambda record: "login_data is deprecated" not in record.getMessage())
    try:
        args.func(args)
    except MyhugError as exc:
        print(f"myhug: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
