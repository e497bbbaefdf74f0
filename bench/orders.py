"""End-to-end order latency and throughput: holder -> seller -> card manager -> delivery.

    .venv/bin/python bench/orders.py [--k 64] [--orders 40] [--seconds 5] [--repeats 3]
                                     [--levels 1 8 64] [--profile [--profile-holders 8]
                                      [--profile-clock cpu]]
                                     [--pattern-orders 10] [--no-floor]
                                     [--no-latency] [--no-throughput] [--keep]
                                     [--loops uvloop asyncio]
    .venv/bin/python bench/orders.py --engine sqlite postgresql [--instances 1 2]
                                     [--levels 8] [--seconds 5] [--repeats 3]

The three parties run as real processes (`nettx -v <role> serve --key ROW --db DB --listen
127.0.0.1:0`, host.cli.partyproc.PartyProcess), each with a software row (its key module is the
nettx applet in-process) and a durable SQLite database (WAL, synchronous=FULL). The holder is
HolderClient.buy in this process. One order is: form request, three confirmations (claim 7;
the card manager's and the delivery company's relayed by the seller), three parts sealed on
the holder's card, the envelope, and the two receipts opened on the card. The seller's
requests to the card manager and the delivery company (the two relayed confirmations, the
authorisation, the delivery) travel on sessions it keeps open and reuses across orders
(docs/protocol.md 12), so an order opens one new connection, the holder's.

First, the pattern of an order, counted (bench/orders_pattern.py, bench/orders_floor.py):
fresh parties under a recorder (wrapping AsyncConnection and the SQLite commit path) and
strace, --pattern-orders orders; the last one's connections, frames and commits become the
floor's script, and strace gives connections and fsyncs per order; then --count-holders
holders (8) buy at once, --pattern-orders orders each, on fresh parties under strace, for the
same counts with concurrent orders (the parties' group commits share fsyncs). The floor
(bench/floor_parties.py: the same processes, connections, round trips, frame sizes and
fdatasyncs, no work) is then counted the same way, and measured as a second shop in every
throughput run, interleaved with nettx, and in the latency blocks (one holder, back to back);
so is the lean floor (floor-lean: the same frames on persistent connections, no fsync), the
floor of the project's next pattern.

Prints the main table, then nettx beside its floors with the ratios (throughput, and one
holder's p50 in the latency blocks), the pattern counted for each shop, and CPU ms per order
per process:

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

--engine runs the throughput measurement once per storage engine and number of instances
instead (bench/orders_engines.py): SQLite with one instance of each party, PostgreSQL (a
private server this bench starts) with each of --instances instances of the seller and of the
card manager on one database, and prints orders/s, p50 and the CPU per order of the database
server and of the parties, all from the same run.

--profile then runs the three parties once more, fresh databases, under cProfile (a wrapper
script enables it on SIGUSR1 and dumps on SIGUSR2, so only the load window of
--profile-holders holders is profiled) and prints, per party, its event loop's time per
completed order by kind (idle, SQLite, applet + crypto, ...) and its top functions; the time
is the loop thread's CPU (--profile-clock cpu, the default: preemption after waking a peer is
not charged to the call that woke it) or wall-clock time (--profile-clock wall).

The code, by job: bench/orders_market.py sets up the centre, the rows, the parties and the
holders, and offers nettx as a Shop; bench/orders_load.py is the holders' load on any Shop
and what it records; bench/orders_measure.py the latency and throughput measurements;
bench/orders_profile.py the --profile run; bench/orders_table.py the printout; the meters
themselves (percentiles, CPU per process) are bench/meters.py, shared with bench/apdu.py.

Everything started is stopped by PID on exit, error, Ctrl-C or SIGTERM. k defaults to 64, not
the centre's 512, to keep setup quick. k is not free: every MSE evaluates the Blom polynomial,
O(k) (~0.05 ms at 64, ~0.4 ms at 512) and an order makes ~28 MSEs across the holder and the
three parties, so --k 512 is ~20 % slower at one holder and ~10 % at eight.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path
from unittest import mock

from rich.markup import escape

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script: bench/ is not a package
    sys.path.insert(0, str(REPO))

import host.parties.holder  # noqa: E402
from bench.meters import results_console  # noqa: E402
from bench.orders_engines import engines_phase, render_engines  # noqa: E402
from bench.orders_floor import (  # noqa: E402
    LEAN,
    FloorShop,
    count_concurrent,
    count_floor,
    record_pattern,
    start_floor,
)
from bench.orders_load import Row, Shop  # noqa: E402
from bench.orders_market import (  # noqa: E402
    NettxShop,
    TimedConnection,
    err,
    make_world,
    start_parties,
)
from bench.orders_measure import (  # noqa: E402
    commit_cost,
    guarded,
    latency_phase,
    throughput_phase,
)
from bench.orders_pattern import Counted  # noqa: E402
from bench.orders_profile import Profile, profile_phase  # noqa: E402
from bench.orders_table import (  # noqa: E402
    environment,
    reading,
    render,
    render_cpu,
    render_floor,
    render_latency_floor,
    render_pattern,
    render_profile,
    render_top,
)
from bench.runs import close_quietly, stopping_everything, work_dir  # noqa: E402
from host.parties.server import LOOP_ENV  # noqa: E402


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
    parser.add_argument("--profile-clock", choices=["cpu", "wall"], default="cpu",
                        help="cProfile's timer: the event-loop thread's CPU time (cpu, the "
                             "default) or wall-clock time, preemption included (wall)")
    parser.add_argument("--pattern-orders", type=int, default=10,
                        help="orders recorded and counted for each shop's pattern (10)")
    parser.add_argument("--count-holders", type=int, default=8,
                        help="concurrent holders whose orders are counted under strace too "
                             "(8; 1 or less: one holder only)")
    parser.add_argument("--no-floor", action="store_true",
                        help="measure nettx alone: no recorded pattern, no floor")
    parser.add_argument("--engine", nargs="+", choices=["sqlite", "postgresql"],
                        help="compare storage engines (throughput only): SQLite with one "
                             "instance, PostgreSQL with each of --instances")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2],
                        help="with --engine postgresql: instances of the seller and of the "
                             "card manager on one database (1 2)")
    parser.add_argument("--loops", nargs="+", choices=["uvloop", "asyncio"],
                        help="run nettx's parties on each of these event loops (NETTX_LOOP), "
                             "each as a shop of its own in the same throughput runs; the "
                             "first is \"nettx\" (latency, floor), the others \"nettx/LOOP\" "
                             "(default: one shop on the parties' default loop)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (databases, logs)")
    parser.add_argument("--holders-keep-connections", action="store_true",
                        help="nettx's throughput holders keep their connection to the seller "
                             "between orders (HolderClient keep_connection); the latency "
                             "holder, the pattern and the floor still connect per order")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1 or args.orders < 1 or min(args.levels) < 1 \
            or args.pattern_orders < 1 \
            or not 2 <= args.k <= 4096:
        parser.error("--seconds > 0, --repeats, --orders, --levels and --pattern-orders >= 1, "
                     "--k 2..4096")
    args.levels = sorted(set(args.levels))
    if args.engine is not None and min(args.instances) < 1:
        parser.error("--instances >= 1")
    if args.engine is not None:
        return engines_main(args)
    if not args.no_floor and shutil.which("strace") is None:
        parser.error("the floor's pattern is counted with strace, which is not installed "
                     "(apt-get install strace), or run with --no-floor")

    rows: list[Row] = []
    counted: list[Counted] = []
    profiles: list[Profile] = []
    with stopping_everything(err.print) as bench_run:
        stack = bench_run.stack
        tmp = work_dir(stack, args.keep, "nettx-orders-", err.print)
        commit_ms = commit_cost(tmp)
        env_line = environment(tmp, commit_ms)
        err.print(f"centre k = {args.k}: rows for 3 parties, 1 card and "
                  f"{max(args.levels)} software holders in {tmp}")
        world = make_world(tmp, args.k, max(*args.levels, args.profile_holders,
                                            args.count_holders))
        pattern = None
        if not args.no_floor:
            err.print(f"pattern: {args.pattern_orders} orders of nettx under strace and the "
                      "recorder, then of the floor under strace")
            pattern, nettx_counted = record_pattern(stack, world, tmp / "pattern",
                                                    args.pattern_orders)
            counted = [nettx_counted,
                       count_floor(stack, pattern, tmp / "floor-count", args.pattern_orders)]
            if args.count_holders > 1:
                err.print(f"pattern: {args.count_holders} holders at once, "
                          f"{args.pattern_orders} orders each, under strace")
                counted.append(count_concurrent(stack, world, tmp / "concurrent-count",
                                                args.pattern_orders, args.count_holders))
        stack.enter_context(mock.patch.object(host.parties.holder, "Connection", TimedConnection))
        with contextlib.ExitStack() as parties:
            stack.callback(close_quietly, parties)
            loops = args.loops or [None]
            keep = args.holders_keep_connections
            nettx = NettxShop(world, start_parties(parties, world, tmp / "run",
                                                   loop_env(loops[0])), keep_connections=keep)
            shops: list[Shop] = [nettx]
            for loop in loops[1:]:  # the same parties on another event loop, side by side
                shops.append(NettxShop(world, start_parties(parties, world, tmp / f"run-{loop}",
                                                            loop_env(loop)), f"nettx/{loop}",
                                       keep_connections=keep))
            floors: list[Shop] = []
            if pattern is not None:
                floors = [FloorShop(pattern, start_floor(parties, pattern, tmp / "floor")),
                          FloorShop(pattern, start_floor(parties, pattern, tmp / LEAN, lean=True),
                                    LEAN, persistent=True)]
                shops += floors
            if not args.no_latency:
                guarded(rows, "latency", lambda: latency_phase(nettx, args, tmp, floors))
            if not args.no_throughput:
                guarded(rows, "throughput", lambda: throughput_phase(shops, args))
        if args.profile:
            profiles = profile_phase(world, args, tmp)
    if bench_run.interrupted:
        return 130
    out = results_console(230)
    out.print(env_line, soft_wrap=True)
    out.print(render(rows, args))
    for line in reading(rows, commit_ms, counted[0] if counted else None):
        out.print(line)
    if pattern is not None:
        out.print(render_floor(rows))
        out.print(render_latency_floor(rows))
        out.print(render_pattern(counted, pattern))
    out.print(render_cpu(rows))
    for row in rows:
        if row.errors:
            out.print(escape(f"{row.kind} / {row.holders} holder(s): first errors: "
                             f"{row.errors}"))
    if profiles:
        out.print(render_profile(profiles, args.profile_holders))
        out.print(render_top(profiles))
    return 0 if all(not r.declined and not r.failed for r in rows) else 1


def loop_env(loop: str | None) -> dict[str, str] | None:
    return None if loop is None else {LOOP_ENV: loop}


def engines_main(args: argparse.Namespace) -> int:
    rows: list[Row] = []
    with stopping_everything(err.print) as bench_run:
        tmp = work_dir(bench_run.stack, args.keep, "nettx-engines-", err.print)
        env_line = environment(tmp, commit_cost(tmp))
        err.print(f"centre k = {args.k}: rows for 3 parties and {max(args.levels)} software "
                  f"holders in {tmp}")
        world = make_world(tmp, args.k, max(args.levels))
        bench_run.stack.enter_context(
            mock.patch.object(host.parties.holder, "Connection", TimedConnection))
        guarded(rows, "engines", lambda: engines_phase(world, args, tmp))
    if bench_run.interrupted:
        return 130
    out = results_console(200)
    out.print(env_line, soft_wrap=True)
    out.print(render_engines([r for r in rows if r.kind == "throughput"]))
    for row in rows:
        if row.errors:
            out.print(escape(f"{row.shop} / {row.holders} holder(s): first errors: "
                             f"{row.errors}"))
    return 0 if all(not r.declined and not r.failed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
