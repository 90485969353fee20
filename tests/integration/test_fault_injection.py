"""Every acknowledged document ends in one final state that the DPI hears, whatever fails and in whatever order.

The database fails at each of its commit and flush points in turn, in each
fault mode (`tests.faultsim`), while the HIN side answers in each of its
orders; after every run the invariants are checked. The points are found by
a clean run, not listed by hand, so a new commit in the pipeline is covered
the day it is written; the test prints how many it covered.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr

from myhug.components import Components
from myhug.directory.models import Physician
from myhug.directory.service import DpiCredentials
from myhug.hin.keys import import_recipient_key
from tests.conftest import Directory
from tests.faultsim import KINDS, MODES, Fault, Snapshots, Submission, check_invariants, run_scenario
from tests.helpers import message
from tests.pgp_keys import make_keypair

ORDERS = ("after", "dsn-early", "mdn-first", "lost-250")


def _prepare(gateway: Components, directory: Directory, tmp_path: Path) -> list[Submission]:
    hosted = directory.hosted(consents=("P-1001",))
    hin = directory.hin(consents=("P-1001",))
    keypair = make_keypair(tmp_path / "physician", hin.address)
    with gateway.db.transaction() as session:
        import_recipient_key(session, gateway.openpgp(), keypair.public)
        physician = session.get(Physician, hosted.id)
        assert physician is not None
        physician.email, physician.notification_mode = "cabinet@example.org", "each"  # the notifier has work
    gateway.db.dispose()  # on PostgreSQL a template has no connection
    def crlf(raw: bytes) -> bytes:  # as it stands in DATA
        return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    return [
        Submission("H-1", hosted.address, "hosted", crlf(message([hosted.address], document="H-1"))),
        Submission("N-1", hin.address, "hin", crlf(message([hin.address], document="N-1"))),
    ]


async def test_every_injection_point_in_every_fault_mode_keeps_the_invariants(
    gateway: Components, dpi: DpiCredentials, directory: Directory, tmp_path: Path
) -> None:
    submissions = _prepare(gateway, directory, tmp_path)
    snapshots = Snapshots(gateway.db.url, tmp_path)
    failures: list[str] = []

    async def one(fault: Fault | None, order: str) -> list[tuple[str, str]]:
        url = snapshots.fresh()
        settings = gateway.settings.model_copy(deep=True)
        settings.database.url = SecretStr(url)
        try:
            run = await run_scenario(settings, gateway.sealer, 1, submissions, fault, order)
            if fault is not None and not run.fired:
                failures.append(f"{fault} ({order}): the point was not reached")
            for problem in check_invariants(settings, run, submissions):
                failures.append(f"{fault or 'no fault'} ({order}, {run.rounds} rounds, {run.restarts} restarts): "
                                f"{problem}")
            return run.seen
        finally:
            snapshots.drop(url)

    # Clean runs, one per order of the HIN side's answers: they find the injection points (an MDN's only
    # when the physician sends one), and each point is then tried under the orders that reach it, in turn.
    orders_of: dict[tuple[str, str], list[str]] = {}
    for order in ORDERS:
        for point in sorted(set(await one(None, order))):
            orders_of.setdefault(point, []).append(order)
    points = set(orders_of)
    assert {kind for kind, _ in points} == set(KINDS), points
    runs = 0
    for n, (kind, site) in enumerate(sorted(points)):
        orders = orders_of[(kind, site)]
        for m, mode in enumerate(MODES):
            if kind == "committed" and mode in ("transient", "outage"):
                continue  # the commit went through: only what the caller then believes can differ
            await one(Fault(kind, site, mode), orders[(n + m) % len(orders)])
            runs += 1
    sites = sorted({site for _, site in points})
    print(f"\nfault injection: {len(points)} injection points at {len(sites)} sites, {runs} faulty runs "
          f"+ {len(ORDERS)} clean runs, {len(failures)} violations")
    print(json.dumps(sorted(f"{k}@{s}" for k, s in points), indent=1))
    assert not failures, "\n".join(failures[:40])
