"""bench/orders.py --profile: the three parties once more, fresh databases, under cProfile
(a wrapper enables it on SIGUSR1 and dumps on SIGUSR2, so only the load window is profiled),
read back per party as its event loop's time per completed order by kind, and its top
functions."""

from __future__ import annotations

import argparse
import contextlib
import pstats
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape

from bench.orders_load import WARMUP_SECONDS, Row, run_level
from bench.orders_market import ROLES, World, err, software_buyers
from host.cli.partyproc import PartyProcess
from host.parties.server import LOOP_ENV

PROFILE_WRAPPER = """\
import cProfile, runpy, signal, sys, time
out = sys.argv.pop(1)
clock = sys.argv.pop(1)
# cpu: the event-loop thread's own CPU time, so a call that wakes a peer and is preempted is
# not charged the time the peer ran; wall: cProfile's default timer
prof = cProfile.Profile(time.thread_time) if clock == "cpu" else cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
def dump(*_):
    prof.disable()
    prof.dump_stats(out)
signal.signal(signal.SIGUSR2, dump)
sys.argv = ["nettx", *sys.argv[1:]]
runpy.run_module("host.cli", run_name="__main__")
"""


class ProfiledParty(PartyProcess):
    """`nettx -v ROLE serve ...` under a cProfile that SIGUSR1 starts and SIGUSR2 dumps."""

    def __init__(self, wrapper: Path, out: Path, clock: str, role: str, args: list[str],
                 log: Path) -> None:
        self.out = out
        # asyncio's loop: cProfile sees its epoll wait and its Python (uvloop's are C)
        super().__init__(role, args, log,
                         launcher=[sys.executable, str(wrapper), str(out), clock],
                         env={LOOP_ENV: "asyncio"})

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        return super().stop(timeout)


KINDS = ("idle: epoll wait", "SQLite (on the loop)", "applet + crypto", "CBOR + wire",
         "logging", "asyncio + sockets", "other Python")


def kind_of(file: str, func: str) -> str:
    if file == "~":
        if "poll' of 'select" in func:
            return KINDS[0]
        if "sqlite3" in func:
            return KINDS[1]
        if "socket" in func or "_asyncio" in func:
            return KINDS[5]
        if "cbor2" in func or "_cbor2" in func:
            return KINDS[3]
        return KINDS[6]
    if "/card_applet/" in file or "/Crypto/" in file or "/cryptography/" in file \
            or "hmac" in file or "hashlib" in file:
        return KINDS[2]
    if "/cbor2/" in file or file.endswith(("host/protocol/codec.py", "host/protocol/wire.py")):
        return KINDS[3]
    if "/logging/" in file:
        return KINDS[4]
    if "/asyncio/" in file or file.endswith(("selectors.py", "socket.py")):
        return KINDS[5]
    return KINDS[6]


@dataclass
class Profile:
    role: str
    clock: str
    orders: int
    seconds: float
    by_kind: dict[str, float]
    top: list[tuple[str, float]]


def read_profile(role: str, clock: str, path: Path, orders: int, seconds: float) -> Profile:
    stats = pstats.Stats(str(path))
    by_kind = dict.fromkeys(KINDS, 0.0)
    funcs: list[tuple[str, float]] = []
    for (file, line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_kind[kind_of(file, func)] += tt
        where = func if file == "~" else f"{Path(file).parent.name}/{Path(file).name}:{line} " \
                                         f"{func}"
        funcs.append((where, tt))
    funcs.sort(key=lambda f: -f[1])
    return Profile(role, clock, orders, seconds, by_kind, funcs[:8])


def profile_phase(world: World, args: argparse.Namespace, tmp: Path) -> list[Profile]:
    level = args.profile_holders
    run_dir = tmp / "profile"
    run_dir.mkdir()
    world.seed_ledger(run_dir / "issuer.sqlite")
    wrapper = tmp / "profile_party.py"
    wrapper.write_text(PROFILE_WRAPPER)
    with contextlib.ExitStack() as stack:
        parties: dict[str, ProfiledParty] = {}
        ports: dict[str, int] = {}
        for role in ("issuer", "delivery", "seller"):
            party = ProfiledParty(wrapper, run_dir / f"{role}.prof", args.profile_clock, role,
                                  world.party_args(role, run_dir / f"{role}.sqlite", ports),
                                  run_dir / f"{role}.log")
            stack.callback(party.stop)
            parties[role], ports[role] = party, party.port
        holders = software_buyers(world, ports["seller"], level)
        row = Row("profile", "software card", level)
        # fresh software cards start their counters at 0 again: fine, this is a fresh ledger
        err.print(f"profile: {level} holder(s), {WARMUP_SECONDS:g} + {args.seconds:g} s, "
                  f"parties under cProfile")
        meter = _SignalMeter(parties)
        run_level(row, holders, args.seconds, meter)
        dumps = [run_dir / f"{role}.prof" for role in ROLES]
        deadline = time.monotonic() + 10  # SIGUSR2 at the window's end: each dumps its stats
        while not all(d.exists() for d in dumps) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)  # dump_stats may still be writing the last one
        if row.declined or row.failed:
            err.print(escape(f"profile run: {row.declined} declined, {row.failed} failed: "
                             f"{row.errors[:2]}"), style="red")
        n = len(row.samples)
        return [read_profile(role, args.profile_clock, run_dir / f"{role}.prof", n, args.seconds)
                for role in ROLES if (run_dir / f"{role}.prof").exists()]


class _SignalMeter:
    """In place of a CpuMeter in run_level: start and stop the parties' profilers."""

    def __init__(self, parties: dict[str, ProfiledParty]) -> None:
        self.parties = parties

    def start(self) -> None:
        for party in self.parties.values():
            party.signal(signal.SIGUSR1)

    def stop(self) -> dict[str, float]:
        for party in self.parties.values():
            party.signal(signal.SIGUSR2)
        return {}
