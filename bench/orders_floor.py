"""The floor as a second `Shop` beside nettx, and the phases that record and count an order's
pattern (bench/orders_pattern.py) for both.

record_pattern: fresh nettx parties under strace and the recorder, one holder, warm-ups then
N orders back to back; the last order's events become the Pattern; strace's calls in the N
orders' window, divided by N, are nettx's connections and fsyncs per order.
count_floor: fresh floor parties under strace, the same N orders of the floor's holder.
count_concurrent: fresh nettx parties under strace, C holders buying at once, N orders each:
what the parties share between concurrent orders (the group commit's fsyncs) shows here.

LEAN is the other floor: the same frames with persistent connections and no fsync
(`floor_parties.py --persistent --no-fsync`), its holder keeping one connection to the seller.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.floor_parties import LENGTH, filler
from bench.orders_load import TALLY, WARMUP_ORDERS, Buyer
from bench.orders_market import PartyProcesses, World, err, software_buyers
from bench.orders_pattern import (
    RECORDER,
    ROLES,
    Counted,
    Op,
    Pattern,
    compile_pattern,
    now,
    per_order,
    read_events,
    strace_counts,
    strace_launcher,
)
from bench.runs import close_quietly
from host.cli.partyproc import PartyProcess
from host.parties.server import LOOP_ENV

FLOOR = Path(__file__).resolve().parent / "floor_parties.py"
LEAN = "floor-lean"  # the shop name of the floor with persistent connections and no fsync


@dataclass(frozen=True)
class FloorBuyer:
    """The floor's holder: each connection the real holder opens, the same frames, no work."""

    pattern: Pattern
    port: int

    def buy(self) -> tuple[str, str]:
        t = time.perf_counter_ns()
        try:
            for connection in self.pattern.holder:
                self._connection(connection)
        finally:
            TALLY.add("wire ns", time.perf_counter_ns() - t)
        return "completed", ""

    def _connection(self, requests: tuple[int, ...]) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            for index in requests:
                _holder_side(sock, self.pattern, index)


class KeptFloorBuyer:
    """The lean floor's holder: one connection to the seller, kept across orders, on which
    each of the order's seller scripts runs in turn (its first frame names it)."""

    def __init__(self, pattern: Pattern, port: int) -> None:
        self.pattern, self.port = pattern, port
        self.sock: socket.socket | None = None

    def buy(self) -> tuple[str, str]:
        t = time.perf_counter_ns()
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            for index in (i for connection in self.pattern.holder for i in connection):
                _holder_side(self.sock, self.pattern, index)
        except OSError:
            if self.sock is not None:
                self.sock.close()
            self.sock = None  # the next order connects again
            raise
        finally:
            TALLY.add("wire ns", time.perf_counter_ns() - t)
        return "completed", ""


def _holder_side(sock: socket.socket, pattern: Pattern, index: int) -> None:
    """The holder's half of the seller's script `index` on the holder's connection (conn 0):
    what the seller receives the holder sends (its first frame names the script), what the
    seller sends the holder reads."""
    for step in pattern.scripts["seller"][index]:
        if step.conn != 0:
            continue
        if step.op is Op.RECV:
            sock.sendall(filler(step.size, index))
        elif step.op is Op.SEND:
            _read_frame(sock)


def _read_frame(sock: socket.socket) -> None:
    """One whole frame (request and answer alternate: nothing follows it)."""
    got = b""
    need = LENGTH.size
    while len(got) < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the floor seller closed the connection")
        got += chunk
        if need == LENGTH.size and len(got) >= LENGTH.size:
            need += LENGTH.unpack_from(got)[0]


@dataclass(frozen=True)
class FloorShop(PartyProcesses):
    """The floor's three processes (bench/floor_parties.py)."""

    pattern: Pattern
    procs: dict[str, PartyProcess]
    name: str = "floor"
    holder_card: str = "none (no work)"
    persistent: bool = False  # LEAN: kept connections (and its parties do not fsync)

    def buyers(self, n: int) -> list[Buyer]:
        if self.persistent:
            return [KeptFloorBuyer(self.pattern, self.port) for _ in range(n)]
        return [FloorBuyer(self.pattern, self.port) for _ in range(n)]


def start_floor(stack: contextlib.ExitStack, pattern: Pattern, run_dir: Path,
                traced: Path | None = None, lean: bool = False) -> dict[str, PartyProcess]:
    """issuer, delivery, then seller, each stopped by PID; under strace into `traced`/ROLE.
    `lean`: persistent connections and no fsync (the LEAN floor)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "pattern.json").write_text(pattern.to_json())
    procs: dict[str, PartyProcess] = {}
    for role in ("issuer", "delivery", "seller"):
        inner = [sys.executable, str(FLOOR)]
        launcher = inner if traced is None else strace_launcher(traced / f"{role}.strace", inner)
        args = ["--pattern", str(run_dir / "pattern.json"), "--dir", str(run_dir)]
        if lean:
            args += ["--persistent", "--no-fsync"]
        if role == "seller":
            args += [f"--peer={r}={procs[r].port}" for r in ("issuer", "delivery")]
        proc = PartyProcess(role, args, run_dir / f"{role}.floor.stdout", launcher=launcher)
        stack.callback(proc.stop)
        procs[role] = proc
        err.print(f"{LEAN if lean else 'floor'} {role} pid {proc.pid} on port {proc.port}")
    return procs


def _timed_orders(buyer: Buyer, n: int) -> tuple[float, float, float, int]:
    """Warm-ups, then n orders; (start, start of the last order, end, completed)."""
    for _ in range(WARMUP_ORDERS):
        buyer.buy()
    time.sleep(0.2)  # a party notes a send after it; the warm-ups' last notes land before
    start = last = now()
    done = 0
    for _ in range(n):
        last = now()
        status, _reason = buyer.buy()
        done += status == "completed"
    time.sleep(0.2)  # the parties' last events (a close after the answer) land in the window
    return start, last, now(), done


def record_pattern(outer: contextlib.ExitStack, world: World, run_dir: Path, n: int
                   ) -> tuple[Pattern, Counted]:
    """nettx's pattern from its last order, and its counts per order over n orders."""
    run_dir.mkdir(parents=True, exist_ok=True)
    wrapper = run_dir / "recorder.py"
    wrapper.write_text(RECORDER)
    world.seed_ledger(run_dir / "issuer.sqlite")
    procs: dict[str, PartyProcess] = {}
    ports: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        outer.callback(close_quietly, stack)  # stopped on Ctrl-C too
        for role in ("issuer", "delivery", "seller"):
            inner = [sys.executable, str(wrapper), str(run_dir / f"{role}.events")]
            # on asyncio's loop, whose sends strace sees as sendto (uvloop's are write)
            proc = PartyProcess(role, world.party_args(role, run_dir / f"{role}.sqlite", ports),
                                run_dir / f"{role}.log",
                                launcher=strace_launcher(run_dir / f"{role}.strace", inner),
                                env={LOOP_ENV: "asyncio"})
            stack.callback(proc.stop)
            procs[role], ports[role] = proc, proc.port
        buyer = software_buyers(world, ports["seller"], 1)[0]
        start, last, end, done = _timed_orders(buyer, n)
    events = {r: read_events(run_dir / f"{r}.events") for r in ROLES}
    pattern = compile_pattern(events, last, end)
    counts = {r: strace_counts(run_dir / f"{r}.strace", start, end) for r in ROLES}
    return pattern, per_order(counts, done, "nettx", _recorded_round_trips(events, start, end,
                                                                              done))


def _recorded_round_trips(events: dict[str, list[dict]], start: float, end: float,
                          orders: int) -> float:
    """Answers sent on accepted connections, all parties, per order, over the window."""
    total = 0
    for evs in events.values():
        opened = {e["conn"] for e in evs if e["ev"] == "open"}
        total += sum(1 for e in evs if e["ev"] == "send" and e["conn"] not in opened
                     and start <= e["t"] < end)
    return total / max(1, orders)


def count_floor(outer: contextlib.ExitStack, pattern: Pattern, run_dir: Path, n: int
                ) -> Counted:
    """The floor's connections and fsyncs per order, by strace, as for nettx."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        outer.callback(close_quietly, stack)  # stopped on Ctrl-C too
        procs = start_floor(stack, pattern, run_dir, traced=run_dir)
        start, _last, end, done = _timed_orders(FloorBuyer(pattern, procs["seller"].port), n)
    counts = {r: strace_counts(run_dir / f"{r}.strace", start, end) for r in ROLES}
    return per_order(counts, done, "floor", pattern.round_trips())


def count_concurrent(outer: contextlib.ExitStack, world: World, run_dir: Path, n: int,
                     holders: int) -> Counted:
    """nettx's connections, frames and fsyncs per order with `holders` holders buying at
    once, n orders each after their warm-ups, counted by strace as for one holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    world.seed_ledger(run_dir / "issuer.sqlite")
    ports: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        outer.callback(close_quietly, stack)  # stopped on Ctrl-C too
        for role in ("issuer", "delivery", "seller"):
            inner = [sys.executable, "-m", "host.cli"]
            # on asyncio's loop, as record_pattern: its sends are what strace counts as frames
            proc = PartyProcess(role, world.party_args(role, run_dir / f"{role}.sqlite", ports),
                                run_dir / f"{role}.log",
                                launcher=strace_launcher(run_dir / f"{role}.strace", inner),
                                env={LOOP_ENV: "asyncio"})
            stack.callback(proc.stop)
            ports[role] = proc.port
        buyers = software_buyers(world, ports["seller"], holders)
        for buyer in buyers:
            for _ in range(WARMUP_ORDERS):
                buyer.buy()
        done: list[int] = []
        go = threading.Barrier(holders + 1)

        def orders(buyer: Buyer) -> None:
            go.wait()
            done.append(sum(buyer.buy()[0] == "completed" for _ in range(n)))

        threads = [threading.Thread(target=orders, args=(b,)) for b in buyers]
        for t in threads:
            t.start()
        time.sleep(0.2)  # the warm-ups' last calls land before the window
        start = now()
        go.wait()
        for t in threads:
            t.join()
        time.sleep(0.2)  # the parties' last calls (a close after the answer) land in it
        end = now()
    counts = {r: strace_counts(run_dir / f"{r}.strace", start, end) for r in ROLES}
    total = sum(done)
    return per_order(counts, total, f"nettx, {holders} holders",
                     counts["seller"]["sendto"] / max(1, total))
