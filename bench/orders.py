"""End-to-end order latency and throughput: holder -> seller -> card manager -> delivery.

    .venv/bin/python bench/orders.py [--k 64] [--orders 40] [--seconds 5] [--repeats 3]
                                     [--levels 1 8 64] [--profile [--profile-holders 8]]
                                     [--no-latency] [--no-throughput] [--keep]

The three parties run as real processes (`nettx -v <role> serve --key ROW --db DB --listen
127.0.0.1:0`, host.cli.partyproc.PartyProcess), each with a software row (its key module is the
nettx applet in-process) and a durable SQLite database (WAL, synchronous=FULL). The holder is
HolderClient.buy in this process. One order is: form request, three confirmations (claim 7;
the card manager's and the delivery company's relayed by the seller), three parts sealed on
the holder's card, the envelope, and the two receipts opened on the card.

Prints ONE table:

  latency     one holder, orders back to back, its card a real card process on the embedded
              reader (terminal.cardproc + terminal.embedded, as `nettx buy --state` does), and
              as the peer, the same EEPROM file through terminal.inprocess (no transport). The
              two alternate in blocks (--repeats blocks of --orders/--repeats orders each, after
              2 warm-up orders per block), so background load hits both alike.
  throughput  C concurrent holders (--levels, default 1 8 64), one thread each, each with its
              own holder identifier, row, account and software card
              (host.parties.softcard, no fsync),
              for --seconds per run, --repeats runs per level, levels interleaved.

Each order is timed around `client.buy(order)`. The split: "card" is the time in the card's
APDUs (the reader's transmit), "parties" the time in the holder's requests to the seller
(which includes the card manager's and the delivery company's work, and queueing), "holder"
the rest (the holder's own CPU: order split, CBOR, APDU encoding). Per process over the timed
window (/proc/PID/task/*/schedstat): time on a CPU and time runnable but waiting for one, for
the seller, the card manager, the delivery company and this process (the holders; the card
process too on the embedded row); and how busy the whole machine was (/proc/stat), so load
from outside the bench shows. A short reading of what limits throughput follows the table.

--profile then runs the three parties once more, fresh databases, under cProfile (a wrapper
script enables it on SIGUSR1 and dumps on SIGUSR2, so only the load window of
--profile-holders holders is profiled) and prints, per party, its event loop's wall time
per completed order by kind (idle, SQLite, applet + crypto, ...) and its top functions.

Everything started is stopped by PID on exit, error, Ctrl-C or SIGTERM. k defaults to 64, not
the centre's 512, to keep setup quick. k is not free: every MSE evaluates the Blom polynomial,
O(k) (~0.05 ms at 64, ~0.4 ms at 512) and an order makes ~28 MSEs across the holder and the
three parties, so --k 512 is ~20 % slower at one holder and ~10 % at eight.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import pstats
import signal
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

from rich.console import Console
from rich.markup import escape
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script: bench/ is not a package
    sys.path.insert(0, str(REPO))

import host.parties.holder  # noqa: E402
from bench.runs import (  # noqa: E402
    close_quietly,
    filesystem,
    load_average,
    stopping_everything,
    work_dir,
)
from card_applet.applet import Applet  # noqa: E402
from card_applet.state import FileStore  # noqa: E402
from host.centre.authority import Authority, write_row_file  # noqa: E402
from host.centre.pairing import CardExpectation, Keyring, authenticated_session  # noqa: E402
from host.centre.personalisation import personalise  # noqa: E402
from host.cli.cardaccess import open_card  # noqa: E402
from host.cli.partyproc import PartyProcess  # noqa: E402
from host.parties.connection import Connection  # noqa: E402
from host.parties.holder import HolderClient, Outcome  # noqa: E402
from host.parties.softcard import software_card  # noqa: E402
from host.protocol.messages import Message  # noqa: E402
from host.protocol.order import Order  # noqa: E402
from host.storage.ledger import Account, Ledger  # noqa: E402
from terminal.inprocess import InProcessReader  # noqa: E402
from terminal.session import CardSession  # noqa: E402

SELLER, ISSUER, DELIVERY = "seller:shop.example", "issuer:bank.example", "delivery:post.example"
ROLES = ("seller", "issuer", "delivery")
CEILING = "1000000.00"  # EUR: the bench pays without asking
IDENT = {"seller": SELLER, "issuer": ISSUER, "delivery": DELIVERY}
CARD_HOLDER = "holder:bench-card@example.org"  # the latency card (a FileStore EEPROM)
PIN, PUK, SOFT_PIN = "1234", "12345678", "0000"  # software_card's PIN is "0000"
NAME, PHONE, EXPIRY = "Bench Holder", "+33 1 23 45 67 89", "09/29"
BALANCE = 10**15  # never the reason for a decline
CATALOGUE = {"currency": "EUR", "items": [
    {"number": "A-100", "name": "smart card reader", "unit_price": 2490},
    {"number": "B-200", "name": "blank cards", "unit_price": 1250}]}
LINES = (("A-100", 1), ("B-200", 2))
WARMUP_ORDERS = 2
WARMUP_SECONDS = 1.0  # throughput: orders finishing in the first second are not counted

err = Console(stderr=True, highlight=False)


def holder_id(i: int) -> str:
    return f"holder:bench-{i}@example.org"


def card_number(i: int) -> str:
    return f"4970{i:012d}"  # 16 digits; the latency card is i = 999999


def an_order(number: str) -> Order:
    return Order(holder_name=NAME, holder_address="1 rue de la Paix, Paris",
                 holder_phone=PHONE, card_number=number, card_expiry=EXPIRY,
                 destination="5 avenue Foch, Lyon", lines=LINES)


# -- timing one order -------------------------------------------------------------------------

class _Acc(threading.local):
    """Per holder thread: ns in the card's APDUs, ns in requests to the seller, APDUs."""

    card = 0
    wire = 0
    apdus = 0


_acc = _Acc()


def _reset_acc() -> None:
    _acc.card = 0
    _acc.wire = 0
    _acc.apdus = 0


class TimedReader:
    """Any reader, with the time spent in transmit added to this thread's account."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.extended_length = inner.extended_length

    def transmit(self, apdu: bytes) -> bytes:
        t = time.perf_counter_ns()
        try:
            return self.inner.transmit(apdu)
        finally:
            _acc.card += time.perf_counter_ns() - t
            _acc.apdus += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


M = TypeVar("M", bound=Message)


class TimedConnection(Connection):
    """The holder's connection to the seller, timing each request until its answer."""

    def request(self, message: Message, answer: type[M]) -> M:
        t = time.perf_counter_ns()
        try:
            return super().request(message, answer)
        finally:
            _acc.wire += time.perf_counter_ns() - t


def timed_session(session: CardSession) -> CardSession:
    """Route an existing session's APDUs through TimedReader."""
    session.protocol.reader = TimedReader(session.protocol.reader)
    return session


@dataclass(frozen=True, slots=True)
class Sample:
    end: int  # perf_counter_ns when buy returned
    total: int  # ns
    card: int
    wire: int
    apdus: int


def timed_buy(client: HolderClient, order: Order) -> tuple[Outcome, Sample]:
    _reset_acc()
    t = time.perf_counter_ns()
    outcome = client.buy(order)
    end = time.perf_counter_ns()
    return outcome, Sample(end, end - t, _acc.card, _acc.wire, _acc.apdus)


# -- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    kind: str  # latency | throughput
    card: str  # what the holder's card is
    holders: int
    rates: list[float] = field(default_factory=list)  # orders/s, one per run / block
    samples: list[Sample] = field(default_factory=list)
    declined: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # process -> % per run

    def outcome(self, outcome: Outcome) -> bool:
        if outcome.status == "completed":
            return True
        if outcome.status == "declined":
            self.declined += 1
        else:
            self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(f"{outcome.status}: {outcome.reason}")
        return False

    def error(self, exc: BaseException) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def add_cpu(self, cpu: dict[str, float]) -> None:
        for name, pct in cpu.items():
            self.cpu.setdefault(name, []).append(pct)


def percentile(values: list[int], q: float) -> float:
    """Nearest-rank percentile of ns values, in ms."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1] / 1e6


def median_ms(values: list[int]) -> float:
    return statistics.median(values) / 1e6


# -- CPU per process, from /proc ------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CPUS = os.cpu_count() or 1


def sched_seconds(pid: int) -> tuple[float, float]:
    """(on CPU, runnable but waiting for a CPU) in seconds, summed over the threads of `pid`
    that are alive now (/proc/PID/task/*/schedstat); (0, 0) where /proc has no schedstat."""
    on_cpu = waiting = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0, 0.0
    for task in tasks:
        try:
            run, wait, _slices = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        on_cpu += int(run)
        waiting += int(wait)
    return on_cpu / 1e9, waiting / 1e9


def box_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal
    return (total - idle) / TICK, total / TICK


class CpuMeter:
    """CPU % and run-queue wait % of each process over a window (100 % = one CPU), and how
    busy the whole machine was (so load from outside this bench shows)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = 0.0
        self.s0: dict[str, tuple[float, float]] = {}
        self.b0 = (0.0, 0.0)

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.s0 = {name: sched_seconds(pid) for name, pid in self.pids.items()}
        self.b0 = box_seconds()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        out = {}
        for name, pid in self.pids.items():
            on_cpu, waiting = sched_seconds(pid)
            out[name] = 100 * (on_cpu - self.s0[name][0]) / wall
            out[name + " wait"] = 100 * (waiting - self.s0[name][1]) / wall
        busy, total = box_seconds()
        if total > self.b0[1]:
            out["box"] = 100 * CPUS * (busy - self.b0[0]) / (total - self.b0[1])
            out["others"] = max(0.0, out["box"] - sum(out[n] for n in self.pids))
        return out


# -- setup ------------------------------------------------------------------------------------


@dataclass
class World:
    home: Path
    k: int
    rows: dict[str, list[int]]
    holders: int  # how many throughput holders have rows and accounts
    card: Path  # the latency holder's EEPROM file

    def row_file(self, role: str) -> Path:
        return self.home / f"{role}.row.json"

    def party_args(self, role: str, db: Path, ports: dict[str, int]) -> list[str]:
        args = ["--key", str(self.row_file(role)), "--db", str(db)]
        if role == "seller":
            args += ["--catalogue", str(self.home / "catalogue.json"),
                     "--issuer", f"127.0.0.1:{ports['issuer']}", "--issuer-id", ISSUER,
                     "--delivery", f"127.0.0.1:{ports['delivery']}", "--delivery-id", DELIVERY]
        return args

    def seed_ledger(self, path: Path) -> None:
        ledger = Ledger(path)
        try:
            ledger.add_account(Account(card_number(999999), CARD_HOLDER, NAME, PHONE, EXPIRY,
                                       BALANCE))
            for i in range(self.holders):
                ledger.add_account(Account(card_number(i), holder_id(i), NAME, PHONE, EXPIRY,
                                           BALANCE))
        finally:
            ledger.close()


def make_world(home: Path, k: int, holders: int) -> World:
    centre = Authority(home / "centre")
    centre.init(k=k)
    rows = centre.issue([SELLER, ISSUER, DELIVERY, CARD_HOLDER,
                         *(holder_id(i) for i in range(holders))])
    world = World(home, k, rows, holders, home / "holder.card.json")
    for role in ROLES:
        write_row_file(world.row_file(role), IDENT[role], rows[IDENT[role]])
    (home / "catalogue.json").write_text(json.dumps(CATALOGUE))
    centre.manufacture_card(world.card)
    reader = InProcessReader(Applet(FileStore(world.card)))
    try:
        # the pairing goes where `nettx buy` looks for it (HOME/cards)
        Keyring(home).save(personalise(CardSession(reader), centre.transport_master,
                                       CARD_HOLDER, rows[CARD_HOLDER], PIN, PUK))
    finally:
        reader.close()
    return world


def start_parties(stack: contextlib.ExitStack, world: World, run_dir: Path
                  ) -> dict[str, PartyProcess]:
    """issuer, delivery, then seller (it needs their ports); each stopped by PID."""
    run_dir.mkdir(parents=True, exist_ok=True)
    world.seed_ledger(run_dir / "issuer.sqlite")
    procs: dict[str, PartyProcess] = {}
    ports: dict[str, int] = {}
    for role in ("issuer", "delivery", "seller"):
        proc = PartyProcess(role, world.party_args(role, run_dir / f"{role}.sqlite", ports),
                            run_dir / f"{role}.log")
        stack.callback(proc.stop)
        procs[role], ports[role] = proc, proc.port
        err.print(f"{role} pid {proc.pid} on port {proc.port}")
    return procs


# -- latency: one holder, the card on the embedded reader vs in-process -----------------------


def buy_block(row: Row, client: HolderClient, order: Order, n: int, meter: CpuMeter) -> None:
    for _ in range(WARMUP_ORDERS):
        outcome, _sample = timed_buy(client, order)
        row.outcome(outcome)
    samples: list[Sample] = []
    meter.start()
    for _ in range(n):
        try:
            outcome, sample = timed_buy(client, order)
        except Exception as exc:
            row.error(exc)
            continue
        if row.outcome(outcome):
            samples.append(sample)
    row.add_cpu(meter.stop())
    if samples:
        row.rates.append(len(samples) / (sum(s.total for s in samples) / 1e9))
    row.samples += samples


def latency_phase(world: World, procs: dict[str, PartyProcess], args: argparse.Namespace,
                  log_dir: Path) -> list[Row]:
    embedded = Row("latency", "card process, embedded", 1)
    inproc = Row("latency", "same file, in-process", 1)
    pids = {role: p.pid for role, p in procs.items()} | {"bench": os.getpid()}
    order = an_order(card_number(999999))
    port = procs["seller"].port
    per_block = max(1, math.ceil(args.orders / args.repeats))
    for block in range(args.repeats):
        err.print(f"latency: block {block + 1}/{args.repeats} ({per_block} orders per reader)")
        # the card process must be gone before the in-process applet loads the same file:
        # two applets on one EEPROM would each keep their own transaction counter
        with open_card(None, world.card, log_dir / "card.log") as reader:
            card_pid = _card_pid(world.card)
            meter = CpuMeter(pids | ({"card": card_pid} if card_pid else {}))
            session = authenticated_session(reader, CardExpectation(world.home))
            client = HolderClient(timed_session(session), PIN, "127.0.0.1", port,
                                  seller=SELLER, max_amount=CEILING)
            try:
                buy_block(embedded, client, order, per_block, meter)
            except Exception as exc:
                embedded.error(exc)
        reader = InProcessReader(Applet(FileStore(world.card)))
        try:
            session = authenticated_session(reader, CardExpectation(world.home))
            client = HolderClient(timed_session(session), PIN, "127.0.0.1", port,
                                  seller=SELLER, max_amount=CEILING)
            buy_block(inproc, client, order, per_block, CpuMeter(pids))
        except Exception as exc:
            inproc.error(exc)
        finally:
            reader.close()
    return [embedded, inproc]


def _card_pid(state: Path) -> int | None:
    """The PID of our child card process serving `state` (open_card keeps it to itself)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"card_applet.serve" in argv and str(state).encode() in argv:
            return int(proc.name)
    return None


# -- throughput: C holders, one thread each ---------------------------------------------------


@dataclass
class Holder:
    client: HolderClient
    order: Order


def make_holders(world: World, port: int, n: int) -> list[Holder]:
    holders = []
    for i in range(n):
        session = timed_session(software_card(holder_id(i), world.rows[holder_id(i)]))
        holders.append(Holder(HolderClient(session, SOFT_PIN, "127.0.0.1", port, seller=SELLER,
                                           max_amount=CEILING),
                              an_order(card_number(i))))
    return holders


def run_level(row: Row, holders: list[Holder], seconds: float, meter: CpuMeter) -> None:
    """All holders buy back to back; orders that finish inside the timed window count."""
    go = threading.Event()
    window = [0, 0]  # ns: start, end of the timed window
    results: list[list[Sample]] = [[] for _ in holders]
    lock = threading.Lock()

    def worker(i: int) -> None:
        holder = holders[i]
        go.wait()
        while time.perf_counter_ns() < window[1]:
            try:
                outcome, sample = timed_buy(holder.client, holder.order)
            except Exception as exc:
                with lock:
                    row.error(exc)
                time.sleep(0.05)
                continue
            with lock:
                ok = row.outcome(outcome)
            if ok:
                results[i].append(sample)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(len(holders))]
    for t in threads:
        t.start()
    now = time.perf_counter_ns()
    window[0] = now + int(WARMUP_SECONDS * 1e9)
    window[1] = window[0] + int(seconds * 1e9)
    go.set()
    time.sleep(max(0.0, (window[0] - time.perf_counter_ns()) / 1e9))
    meter.start()
    time.sleep(max(0.0, (window[1] - time.perf_counter_ns()) / 1e9))
    row.add_cpu(meter.stop())
    for t in threads:
        t.join(120)
        if t.is_alive():
            raise RuntimeError("a holder thread did not finish its last order in 120 s")
    counted = [s for per in results for s in per if window[0] <= s.end < window[1]]
    row.rates.append(len(counted) / seconds)
    row.samples += counted


def throughput_phase(world: World, procs: dict[str, PartyProcess],
                     args: argparse.Namespace) -> list[Row]:
    pids = {role: p.pid for role, p in procs.items()} | {"bench": os.getpid()}
    holders = make_holders(world, procs["seller"].port, max(args.levels))
    rows = {c: Row("throughput", "software, MemoryStore", c) for c in args.levels}
    for rep in range(args.repeats):
        for c in args.levels:
            err.print(f"throughput: run {rep + 1}/{args.repeats}, {c} holder(s), "
                      f"{WARMUP_SECONDS:g} + {args.seconds:g} s")
            run_level(rows[c], holders[:c], args.seconds, CpuMeter(pids))
    return list(rows.values())


# -- profile: the parties under cProfile, enabled by signal for a load window -----------------

PROFILE_WRAPPER = """\
import cProfile, runpy, signal, sys
out = sys.argv.pop(1)
prof = cProfile.Profile()
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

    def __init__(self, wrapper: Path, out: Path, role: str, args: list[str], log: Path) -> None:
        self.out = out
        super().__init__(role, args, log, launcher=[sys.executable, str(wrapper), str(out)])

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        return super().stop(timeout)


KINDS = ("idle: epoll wait", "SQLite (COMMIT = WAL fsync)", "applet + crypto", "CBOR + wire",
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
    if "/card_applet/" in file or "/Crypto/" in file or "hmac" in file or "hashlib" in file:
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
    orders: int
    seconds: float
    by_kind: dict[str, float]
    top: list[tuple[str, float]]


def read_profile(role: str, path: Path, orders: int, seconds: float) -> Profile:
    stats = pstats.Stats(str(path))
    by_kind = dict.fromkeys(KINDS, 0.0)
    funcs: list[tuple[str, float]] = []
    for (file, line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_kind[kind_of(file, func)] += tt
        where = func if file == "~" else f"{Path(file).parent.name}/{Path(file).name}:{line} " \
                                         f"{func}"
        funcs.append((where, tt))
    funcs.sort(key=lambda f: -f[1])
    return Profile(role, orders, seconds, by_kind, funcs[:8])


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
            party = ProfiledParty(wrapper, run_dir / f"{role}.prof", role,
                                  world.party_args(role, run_dir / f"{role}.sqlite", ports),
                                  run_dir / f"{role}.log")
            stack.callback(party.stop)
            parties[role], ports[role] = party, party.port
        holders = make_holders(world, ports["seller"], level)
        row = Row("profile", "software card", level)
        # fresh software cards start their counters at 0 again: fine, this is a fresh ledger
        err.print(f"profile: {level} holder(s), {WARMUP_SECONDS:g} + {args.seconds:g} s, "
                  f"parties under cProfile")
        meter = _SignalMeter(parties)
        run_level(row, holders, args.seconds, meter)  # type: ignore[arg-type]
        dumps = [run_dir / f"{role}.prof" for role in ROLES]
        deadline = time.monotonic() + 10  # SIGUSR2 at the window's end: each dumps its stats
        while not all(d.exists() for d in dumps) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)  # dump_stats may still be writing the last one
        if row.declined or row.failed:
            err.print(escape(f"profile run: {row.declined} declined, {row.failed} failed: "
                             f"{row.errors[:2]}"), style="red")
        n = len(row.samples)
        return [read_profile(role, run_dir / f"{role}.prof", n, args.seconds)
                for role in ROLES if (run_dir / f"{role}.prof").exists()]


class _SignalMeter:
    """In place of CpuMeter in run_level: start and stop the parties' profilers."""

    def __init__(self, parties: dict[str, ProfiledParty]) -> None:
        self.parties = parties

    def start(self) -> None:
        for party in self.parties.values():
            party.signal(signal.SIGUSR1)

    def stop(self) -> dict[str, float]:
        for party in self.parties.values():
            party.signal(signal.SIGUSR2)
        return {}


# -- environment ------------------------------------------------------------------------------


def commit_cost(tmp: Path, n: int = 40) -> float:
    """Median ms of one small SQLite commit, WAL + synchronous=FULL, on tmp's file system."""
    path = tmp / "fsync-probe.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        times = []
        for i in range(n):
            t = time.perf_counter_ns()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, os.urandom(200)))
            conn.execute("COMMIT")
            times.append(time.perf_counter_ns() - t)
    finally:
        conn.close()
    return median_ms(times)


def environment(tmp: Path, commit_ms: float) -> str:
    fs, load = filesystem(tmp), load_average()
    return (f"Python {platform.python_version()} ({platform.python_implementation()}) | "
            f"SQLite {sqlite3.sqlite_version} | CPUs: {os.cpu_count()} | load avg: {load} | "
            f"{platform.system()} {platform.release()} | databases on {fs} ({tmp}); one "
            f"WAL commit with synchronous=FULL: {commit_ms:.2f} ms")


# -- report -----------------------------------------------------------------------------------


def med(row: Row, name: str) -> float | None:
    return statistics.median(row.cpu[name]) if name in row.cpu else None


def cpu_cell(row: Row, suffix: str = "") -> str:
    names = ["seller", "issuer", "delivery", "bench"] + (["card"] if "card" in row.cpu else [])
    return " / ".join("-" if (v := med(row, n + suffix)) is None else f"{v:.0f}" for n in names)


def per_order_cell(row: Row) -> str:
    """CPU ms per completed order: the seller's, and all of this bench's processes'."""
    rate = statistics.median(row.rates)
    seller = med(row, "seller")
    ours = [v for n in ("seller", "issuer", "delivery", "bench", "card")
            if (v := med(row, n)) is not None]
    if not rate or seller is None:
        return ""
    return f"{10 * seller / rate:.1f} / {10 * sum(ours) / rate:.1f}"


def box_cell(row: Row) -> str:
    box, others = med(row, "box"), med(row, "others")
    return "" if box is None or others is None else f"{box:.0f} ({others:.0f})"


def render(rows: list[Row], args: argparse.Namespace) -> Table:
    apdus = sorted({s.apdus for r in rows for s in r.samples})
    table = Table(
        title=f"nettx orders end to end (k = {args.k})",
        caption=(
            "latency: one holder, orders back to back; orders/s = orders ÷ their summed time; "
            f"{args.repeats} block(s) per reader, alternating, {WARMUP_ORDERS} warm-up orders "
            "each. throughput: C holder threads, "
            f"{WARMUP_SECONDS:g} s not counted + {args.seconds:g} s per run, {args.repeats} "
            "run(s) per level, interleaved; orders/s = the median run (min–max); an order "
            "counts when it finishes inside the timed window.\n"
            "median / p99: over every counted order (nearest rank). card, parties, holder: "
            "median ms per order in the card's APDUs "
            f"({'/'.join(map(str, apdus)) or '?'} per order), in requests to the seller (all "
            "three parties' work, queueing, loopback), and the rest (the holder's own CPU).\n"
            "CPU %: on a CPU, per process, over the timed window (/proc/PID/task/*/schedstat; "
            "100 % = 1 CPU; median of the runs): seller / card manager / delivery / this "
            "process (the holders) (/ the card process). run-queue wait %: the same processes "
            "runnable but waiting for a CPU. CPU ms/order: the seller's, and all of those "
            f"processes'. box busy %: the whole machine ({CPUS} CPUs = {100 * CPUS} %), in "
            "brackets what other processes than these used."),
        caption_justify="left")
    for name in ("run", "holder's card", "holders", "orders/s\n(min–max)", "median\nms",
                 "p99\nms", "card\nms", "parties\nms", "holder\nms", "orders",
                 "declined\n/ failed", "CPU %\nsel/iss/del/bench(/card)",
                 "run-queue wait %\nsel/iss/del/bench(/card)", "CPU ms/order\nsel / all",
                 "box busy %\n(others)"):
        table.add_column(name, justify="left" if name in ("run", "holder's card") else "right",
                         no_wrap=True)
    previous = None
    for row in rows:
        if previous is not None and row.kind != previous:
            table.add_section()
        previous = row.kind
        bad = f"{row.declined} / {row.failed}"
        if not row.samples:
            table.add_row(row.kind, row.card, str(row.holders), "n/a", *[""] * 6, bad,
                          *[""] * 4)
            continue
        totals = [s.total for s in row.samples]
        card = [s.card for s in row.samples]
        wire = [s.wire for s in row.samples]
        rest = [s.total - s.card - s.wire for s in row.samples]
        table.add_row(
            row.kind, row.card, str(row.holders),
            f"{statistics.median(row.rates):,.1f} ({min(row.rates):,.1f}–{max(row.rates):,.1f})",
            f"{median_ms(totals):.1f}", f"{percentile(totals, 0.99):.1f}",
            f"{median_ms(card):.1f}", f"{median_ms(wire):.1f}", f"{median_ms(rest):.1f}",
            f"{len(row.samples):,}", bad, cpu_cell(row), cpu_cell(row, " wait"),
            per_order_cell(row), box_cell(row))
    return table


def reading(rows: list[Row], commit_ms: float) -> list[str]:
    """What limits throughput, in a few lines computed from the throughput rows."""
    levels = [r for r in rows if r.kind == "throughput" and r.samples]
    if not levels:
        return []
    rates = " → ".join(f"{statistics.median(r.rates):.1f}" for r in levels)
    top = levels[-1]
    rate = statistics.median(top.rates)
    lines = [f"Throughput with {' / '.join(str(r.holders) for r in levels)} holders: {rates} "
             f"orders/s. At {top.holders} holders the median order takes "
             f"{median_ms([s.total for s in top.samples]) / 1000:.2f} s ≈ {top.holders} ÷ "
             f"{rate:.1f} (Little's law): more holders only queue, at the seller "
             f"(\"parties\" is {median_ms([s.wire for s in top.samples]):.0f} ms of it)."]
    load = {n: (med(top, n) or 0.0, med(top, n + " wait") or 0.0)
            for n in ("seller", "issuer", "delivery")}
    busiest = max(load, key=lambda n: sum(load[n]))
    cpu, wait = load[busiest]
    seller_ms = 10 * cpu / rate if rate else 0.0
    lines.append(
        f"Busiest party: the {busiest} ({cpu:.0f} % on a CPU + {wait:.0f} % waiting for one = "
        f"{cpu + wait:.0f} % of its one event-loop thread; the rest is blocking system calls "
        "and idle). Others: " + ", ".join(f"{n} {c:.0f} + {w:.0f} %" for n, (c, w) in
                                         load.items() if n != busiest)
        + f". It spends {seller_ms:.1f} ms of CPU per order: alone on a CPU it could carry "
        f"≈ {1000 / seller_ms if seller_ms else 0:.0f} orders/s.")
    box, others = med(top, "box"), med(top, "others")
    if box is not None and others is not None:
        lines.append(f"The machine: {CPUS} CPUs, {box:.0f} % of {100 * CPUS} % busy, "
                     f"{others:.0f} % of it by other processes than this bench's. All of "
                     f"this bench's processes used {per_order_cell(top).split(' / ')[-1]} ms "
                     "of CPU per order.")
    lines.append(f"Durable writes: the seller commits {SELLER_COMMITS} times per order (received, "
                 f"authorising, approved, final), the card manager and the delivery company "
                 f"once each; one WAL commit with synchronous=FULL costs {commit_ms:.2f} ms on "
                 f"this disk when idle, so fsync is ≈ {SELLER_COMMITS * commit_ms:.1f} ms of "
                 f"the seller's time per order.")
    return lines


SELLER_COMMITS = 4  # host/parties/seller.py: OrderStatus received, authorising, approved, final


def render_profile(profiles: list[Profile], level: int) -> Table:
    table = Table(title=f"where the parties' time goes: cProfile, {level} holders "
                        "(ms of the party's one event-loop thread per completed order)",
                  caption=("Wall-clock own time (cProfile's default timer), so a kind also "
                           "holds the time the process was preempted there: mostly in socket "
                           "send/connect, which wake a peer on this small machine. SQLite is "
                           "mostly its COMMIT (WAL fsync, synchronous=FULL). cProfile's "
                           "overhead inflates the Python kinds (roughly ×1.5–2).\n"
                           "busy = all but idle; 1000 ÷ busy ≈ orders/s that party's one "
                           "thread could carry under the profiler."),
                  caption_justify="left")
    table.add_column("kind")
    for p in profiles:
        table.add_column(p.role, justify="right")
    for kind in KINDS:
        table.add_row(kind, *[f"{1000 * p.by_kind[kind] / max(1, p.orders):.2f}"
                              for p in profiles])
    table.add_section()
    busy = [sum(v for k, v in p.by_kind.items() if k != KINDS[0]) for p in profiles]
    table.add_row("busy", *[f"{1000 * b / max(1, p.orders):.2f}"
                            for b, p in zip(busy, profiles, strict=True)])
    table.add_row("busy % of the window", *[f"{100 * b / p.seconds:.0f} %"
                                            for b, p in zip(busy, profiles, strict=True)])
    table.add_row("orders in the window", *[str(p.orders) for p in profiles])
    return table


def render_top(profiles: list[Profile]) -> Table:
    table = Table(title="top functions by own time (s over the window)")
    table.add_column("party")
    table.add_column("function")
    table.add_column("s", justify="right")
    for p in profiles:
        for where, tt in p.top:
            table.add_row(p.role, where[:110], f"{tt:.3f}")
        table.add_section()
    return table


# -- main -------------------------------------------------------------------------------------


def guarded(rows: list[Row], what: str, fn: Callable[[], list[Row]]) -> None:
    try:
        rows += fn()
    except Exception as exc:
        err.print(escape(f"{what} failed: {type(exc).__name__}: {exc}"), style="red")
        row = Row(what, f"error: {type(exc).__name__}: {exc}"[:80], 0)
        rows.append(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=64,
                        help="the centre's k (64; 512 is the product default, slower to set up)")
    parser.add_argument("--orders", type=int, default=40,
                        help="latency: timed orders per reader (40), after warm-ups")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="throughput: timed seconds per run (5)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="throughput runs per level, and latency blocks per reader (3)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 64],
                        help="concurrent holders per throughput level (1 8 64)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency rows")
    parser.add_argument("--no-throughput", action="store_true",
                        help="skip the throughput rows")
    parser.add_argument("--profile", action="store_true",
                        help="also run the parties under cProfile for one load window")
    parser.add_argument("--profile-holders", type=int, default=8,
                        help="concurrent holders during --profile (8: enough to saturate "
                             "the seller, few enough that queueing does not dominate)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (databases, logs)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1 or args.orders < 1 or min(args.levels) < 1 \
            or not 2 <= args.k <= 4096:
        parser.error("--seconds > 0, --repeats, --orders and --levels >= 1, --k 2..4096")
    args.levels = sorted(set(args.levels))

    rows: list[Row] = []
    profiles: list[Profile] = []
    with stopping_everything(err.print) as bench_run:
        stack = bench_run.stack
        tmp = work_dir(stack, args.keep, "nettx-orders-", err.print)
        commit_ms = commit_cost(tmp)
        env_line = environment(tmp, commit_ms)
        err.print(f"centre k = {args.k}: rows for 3 parties, 1 card and "
                  f"{max(args.levels)} software holders in {tmp}")
        world = make_world(tmp, args.k, max(*args.levels, args.profile_holders))
        stack.enter_context(mock.patch.object(host.parties.holder, "Connection", TimedConnection))
        with contextlib.ExitStack() as parties:
            stack.callback(close_quietly, parties)
            procs = start_parties(parties, world, tmp / "run")
            if not args.no_latency:
                guarded(rows, "latency", lambda: latency_phase(world, procs, args, tmp))
            if not args.no_throughput:
                guarded(rows, "throughput", lambda: throughput_phase(world, procs, args))
        if args.profile:
            profiles = profile_phase(world, args, tmp)
    if bench_run.interrupted:
        return 130
    out = Console(highlight=False, width=max(Console().width, 230))
    out.print(env_line, soft_wrap=True)
    out.print(render(rows, args))
    for line in reading(rows, commit_ms):
        out.print(line)
    for row in rows:
        if row.errors:
            out.print(escape(f"{row.kind} / {row.holders} holder(s): first errors: "
                             f"{row.errors}"))
    if profiles:
        out.print(render_profile(profiles, args.profile_holders))
        out.print(render_top(profiles))
    return 0 if all(not r.declined and not r.failed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
