"""The benchmark's floor: an order's pattern compiled from recorded events, strace's calls
counted in a window, and the floor's processes replaying a pattern (bench/orders_pattern.py,
bench/orders_floor.py, bench/floor_parties.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.orders_floor import FloorBuyer, FloorShop, KeptFloorBuyer, start_floor
from bench.orders_pattern import RECORDER, Op, Pattern, Step, compile_pattern, strace_counts

# one order: the holder (port 5000) asks the seller (listening 7000), which opens a connection
# to the card manager (listening 8000) from port 5001, commits, and answers
EVENTS = {
    "seller": [
        {"t": 1.0, "ev": "conn", "conn": 0, "local": 7000, "peer": 5000},
        {"t": 1.1, "ev": "recv", "conn": 0, "size": 81, "label": "form-request"},
        {"t": 1.2, "ev": "conn", "conn": 1, "local": 5001, "peer": 8000},
        {"t": 1.2, "ev": "open", "conn": 1},
        {"t": 1.3, "ev": "send", "conn": 1, "size": 699, "label": "authorise"},
        {"t": 1.5, "ev": "recv", "conn": 1, "size": 444, "label": "authorisation"},
        {"t": 1.6, "ev": "close", "conn": 1},
        {"t": 1.7, "ev": "commit"},
        {"t": 1.8, "ev": "send", "conn": 0, "size": 549, "label": "outcome"},
        {"t": 1.9, "ev": "eof", "conn": 0},
        {"t": 1.9, "ev": "close", "conn": 0},
        {"t": 9.0, "ev": "conn", "conn": 2, "local": 7000, "peer": 5002},  # the next order
    ],
    "issuer": [
        {"t": 1.25, "ev": "conn", "conn": 0, "local": 8000, "peer": 5001},
        {"t": 1.3, "ev": "recv", "conn": 0, "size": 699, "label": "authorise"},
        {"t": 1.4, "ev": "commit"},
        {"t": 1.45, "ev": "send", "conn": 0, "size": 444, "label": "authorisation"},
    ],
    "delivery": [],
}

SELLER = (Step(Op.RECV, 0, 81, "form-request"), Step(Op.OPEN, 1, peer="issuer"),
          Step(Op.SEND, 1, 699, "authorise", script=0), Step(Op.RECV, 1, 444, "authorisation"),
          Step(Op.CLOSE, 1), Step(Op.COMMIT), Step(Op.SEND, 0, 549, "outcome"))
ISSUER = (Step(Op.RECV, 0, 699, "authorise"), Step(Op.COMMIT),
          Step(Op.SEND, 0, 444, "authorisation"))


def test_compile_pattern_follows_each_connection_to_its_peer() -> None:
    pattern = compile_pattern(EVENTS, 0.5, 5.0)
    assert pattern.holder == ((0,),)
    assert pattern.scripts == {"seller": (SELLER,), "issuer": (ISSUER,), "delivery": ()}
    assert (pattern.round_trips(), pattern.connections()) == (2, 2)
    assert pattern.commits() == {"seller": 1, "issuer": 1, "delivery": 0}
    assert pattern.frames() == ["H→S form-request:81", "S+I", "S→I authorise:699",
                                "I→S authorisation:444", "S commit", "S→H outcome:549"]
    assert Pattern.from_json(pattern.to_json()) == pattern


# pooled sessions: the seller's connection to the card manager (port 5001 -> 8000) was opened
# and its session handshake made in an earlier order (before t = 1.0); this order's holder
# sends two requests on one connection, and the seller reuses its session for both
POOLED = {
    "seller": [
        {"t": 0.1, "ev": "conn", "conn": 1, "local": 5001, "peer": 8000},
        {"t": 0.1, "ev": "open", "conn": 1},
        {"t": 0.2, "ev": "send", "conn": 1, "size": 70, "label": "hello"},
        {"t": 1.0, "ev": "conn", "conn": 2, "local": 7000, "peer": 5000},
        {"t": 1.1, "ev": "recv", "conn": 2, "size": 90, "label": "confirm"},
        {"t": 1.2, "ev": "send", "conn": 1, "size": 130, "label": "frame/confirm"},
        {"t": 1.3, "ev": "recv", "conn": 1, "size": 80, "label": "frame/confirmed"},
        {"t": 1.4, "ev": "send", "conn": 2, "size": 40, "label": "confirmed"},
        {"t": 1.5, "ev": "recv", "conn": 2, "size": 900, "label": "order"},
        {"t": 1.6, "ev": "send", "conn": 1, "size": 760, "label": "frame/authorise"},
        {"t": 1.7, "ev": "recv", "conn": 1, "size": 480, "label": "frame/authorisation"},
        {"t": 1.8, "ev": "commit"},
        {"t": 1.9, "ev": "send", "conn": 2, "size": 549, "label": "outcome"},
        {"t": 2.0, "ev": "eof", "conn": 2},
        {"t": 2.0, "ev": "close", "conn": 2},
    ],
    "issuer": [
        {"t": 0.15, "ev": "conn", "conn": 4, "local": 8000, "peer": 5001},
        {"t": 0.2, "ev": "recv", "conn": 4, "size": 70, "label": "hello"},
        {"t": 1.2, "ev": "recv", "conn": 4, "size": 130, "label": "frame/confirm"},
        {"t": 1.25, "ev": "send", "conn": 4, "size": 80, "label": "frame/confirmed"},
        {"t": 1.6, "ev": "recv", "conn": 4, "size": 760, "label": "frame/authorise"},
        {"t": 1.65, "ev": "commit"},
        {"t": 1.7, "ev": "send", "conn": 4, "size": 480, "label": "frame/authorisation"},
    ],
    "delivery": [],
}


def test_compile_pattern_reuses_a_connection_kept_from_an_earlier_order() -> None:
    pattern = compile_pattern(POOLED, 1.0, 5.0)
    assert pattern.holder == ((0, 1),)  # one holder connection, two requests on it
    assert pattern.scripts["seller"] == (
        (Step(Op.RECV, 0, 90, "confirm"), Step(Op.USE, 1, peer="issuer"),
         Step(Op.SEND, 1, 130, "frame/confirm", script=0),
         Step(Op.RECV, 1, 80, "frame/confirmed"), Step(Op.SEND, 0, 40, "confirmed")),
        (Step(Op.RECV, 0, 900, "order"), Step(Op.USE, 1, peer="issuer"),
         Step(Op.SEND, 1, 760, "frame/authorise", script=1),
         Step(Op.RECV, 1, 480, "frame/authorisation"), Step(Op.COMMIT),
         Step(Op.SEND, 0, 549, "outcome")))
    assert pattern.scripts["issuer"] == (
        (Step(Op.RECV, 0, 130, "frame/confirm"), Step(Op.SEND, 0, 80, "frame/confirmed")),
        (Step(Op.RECV, 0, 760, "frame/authorise"), Step(Op.COMMIT),
         Step(Op.SEND, 0, 480, "frame/authorisation")))
    # four answers; one new connection (the holder's): the seller's is kept from before
    assert (pattern.round_trips(), pattern.connections()) == (4, 1)
    assert Pattern.from_json(pattern.to_json()) == pattern


STRACE = b"""\
10 0.900000 fdatasync(5)                = 0
10 1.000000 accept4(6, {sa_family=AF_INET}, [16], SOCK_CLOEXEC) = 7
10 1.000100 accept4(6, 0x7f, [16], SOCK_CLOEXEC) = -1 EAGAIN (Resource temporarily unavailable)
10 1.100000 connect(8, {sa_family=AF_INET}, 16) = -1 EINPROGRESS (Operation now in progress)
10 1.200000 connect(9, {sa_family=AF_INET}, 16) = -1 ECONNREFUSED (Connection refused)
11 1.300000 fdatasync(5 <unfinished ...>
10 1.300100 fsync(4)                    = 0
11 1.400000 <... fdatasync resumed>)    = 0
10 1.500000 sendto(7, "..."..., 46, 0, NULL, 0) = 46
10 2.000000 fdatasync(5)                = 0
"""


def test_strace_counts_only_successful_calls_inside_the_window(tmp_path: Path) -> None:
    trace = tmp_path / "seller.strace"
    trace.write_bytes(STRACE)
    counts = strace_counts(trace, 1.0, 2.0)
    assert dict(counts) == {"accept": 1, "connect": 1, "fsync": 2, "sendto": 1}


def test_the_recorder_sees_a_group_commit_s_durable_commit(tmp_path: Path) -> None:
    """A party's durable writes go through the group commit (its COMMIT on the database's
    thread): the recorder must note each, or the floor would copy an order without fsyncs."""
    launcher = tmp_path / "recorder.py"
    launcher.write_text(RECORDER)
    events = tmp_path / "events.jsonl"
    env = {**os.environ, "NETTX_CARD_NUMBER": "4000123412341234"}
    done = subprocess.run(
        [sys.executable, str(launcher), str(events), "issuer", "add-account",
         "--db", str(tmp_path / "issuer.sqlite"), "--home", str(tmp_path / "home"),
         "--expiry", "09/29", "--holder", "holder:alice@example.org", "--name", "Alice",
         "--balance", "100"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    noted = [json.loads(line)["ev"] for line in events.read_text().splitlines()]
    assert noted.count("commit") == 1


def test_the_floor_replays_the_pattern_and_commits_where_it_says(tmp_path: Path) -> None:
    pattern = compile_pattern(EVENTS, 0.5, 5.0)
    with contextlib.ExitStack() as stack:
        procs = start_floor(stack, pattern, tmp_path)
        buyer = FloorBuyer(pattern, procs["seller"].port)
        assert [buyer.buy() for _ in range(3)] == [("completed", "")] * 3
    # each commit appends 64 bytes to the party's own file and fdatasyncs it
    assert (tmp_path / "seller.floor.log").stat().st_size == 3 * 64
    assert (tmp_path / "issuer.floor.log").stat().st_size == 3 * 64
    assert (tmp_path / "delivery.floor.log").stat().st_size == 0


def test_the_floor_keeps_a_pooled_connection_open_across_orders(tmp_path: Path) -> None:
    """Three orders of the pooled pattern: the floor seller opens one connection to the floor
    card manager, the first time it needs one, and uses it for every later request."""
    pattern = compile_pattern(POOLED, 1.0, 5.0)
    with contextlib.ExitStack() as stack:
        procs = start_floor(stack, pattern, tmp_path, traced=tmp_path)
        buyer = FloorBuyer(pattern, procs["seller"].port)
        assert [buyer.buy() for _ in range(3)] == [("completed", "")] * 3
    assert (tmp_path / "issuer.floor.log").stat().st_size == 3 * 64
    accepted = strace_counts(tmp_path / "issuer.strace", 0, float("inf"))["accept"]
    assert accepted == 1


def sockets(pid: int) -> int:
    """Open sockets of a process (its listener and its event loop's self-pipe included)."""
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:"))


def test_the_lean_floor_keeps_its_connections_and_never_fsyncs(tmp_path: Path) -> None:
    pattern = compile_pattern(EVENTS, 0.5, 5.0)
    with contextlib.ExitStack() as stack:
        procs = start_floor(stack, pattern, tmp_path, lean=True)
        idle = {role: sockets(p.pid) for role, p in procs.items()}
        shop = FloorShop(pattern, procs, "floor-lean", persistent=True)
        [buyer] = shop.buyers(1)
        assert isinstance(buyer, KeptFloorBuyer)
        assert [buyer.buy() for _ in range(3)] == [("completed", "")] * 3
        held = buyer.sock
        assert held is not None and buyer.buy() == ("completed", "") and buyer.sock is held
        # one connection the seller keeps to the card manager for all four orders (the floor
        # of today's pattern opens one per order, and closes it), and the holder's
        assert sockets(procs["issuer"].pid) == idle["issuer"] + 1
        assert sockets(procs["seller"].pid) == idle["seller"] + 2
        held.close()
    for role in ("seller", "issuer", "delivery"):
        assert (tmp_path / f"{role}.floor.log").stat().st_size == 0
