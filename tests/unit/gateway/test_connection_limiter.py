"""The SMTP connection caps, and their share in each of several intake processes."""

from __future__ import annotations

from myhug.gateway.smtp import ConnectionLimiter


def admitted(limiter: ConnectionLimiter, peers: list[str]) -> int:
    return sum(limiter.admit(peer) for peer in peers)


def test_caps_per_peer_and_in_total_and_a_release_makes_room() -> None:
    limiter = ConnectionLimiter(total=5, per_peer=3)
    assert admitted(limiter, ["a"] * 4) == 3
    assert admitted(limiter, ["b"] * 4) == 2  # the total is reached first
    limiter.release("a")
    assert limiter.admit("b") and not limiter.admit("c")


def test_each_of_several_processes_keeps_its_share_so_the_caps_hold_for_the_gateway() -> None:
    shares = [ConnectionLimiter(total=200, per_peer=50, processes=3) for _ in range(3)]
    assert sum(admitted(share, ["dpi"] * 50) for share in shares) <= 50
    assert sum(admitted(share, [f"peer-{n}" for n in range(200)]) for share in shares) <= 200
    one = ConnectionLimiter(total=2, per_peer=1, processes=4)
    assert one.admit("dpi")  # never below one connection per process
