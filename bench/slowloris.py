"""An honest holder's order latency with and without a slowloris on the seller and the card
manager (issue 10 item 7).

    .venv/bin/python bench/slowloris.py [--orders 10] [--runs 3] [--connections 256]
                                        [--tick 8 10] [--kinds idle trickle cheap] [--k 64]
                                        [--keep]

The three parties run as real processes (`nettx -v <role> serve`, host.cli.partyproc, set up as
bench/orders.py does), on 127.0.0.1. The holder is HolderClient.buy in this process, its card
the nettx applet in-process on an EEPROM file (no transport). Per run: --orders orders with no
attack, then for each --kinds an attack of --connections connections on the seller and as
many on the card manager (tests/host/slowloris.py: every connection idle after connecting,
trickling one frame a byte per tick, or sending one cheap valid request per tick; ticks drawn
from --tick seconds; a connection the server closes is reopened on its next tick), mounted and
held for 4 s before the first order, and --orders orders while it runs; then the attack is
stopped. Attack traffic goes only to 127.0.0.1; each attack stops by itself after
--orders × 30 s + 60 s at the latest.

Prints ONE table: per condition, the orders completed and refused (by code), and the order
latency in ms: the median of the runs' medians, and the median, p90 and max over all orders.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script: bench/ is not a package
    sys.path.insert(0, str(REPO))

from bench.meters import percentile, results_table  # noqa: E402
from bench.orders_market import (  # noqa: E402
    CEILING,
    PIN,
    SELLER,
    an_order,
    card_number,
    make_world,
    start_parties,
)
from bench.runs import load_average, stopping_everything, work_dir  # noqa: E402
from card_applet.applet import Applet  # noqa: E402
from card_applet.state import FileStore  # noqa: E402
from host.centre.pairing import CardExpectation, authenticated_session  # noqa: E402
from host.errors import NettxError  # noqa: E402
from host.parties.admission import Limits  # noqa: E402
from host.parties.holder import HolderClient  # noqa: E402
from terminal.inprocess import InProcessReader  # noqa: E402
from tests.host.slowloris import Counts, Kind, Slowloris  # noqa: E402

err = Console(stderr=True, highlight=False)
MOUNT_HOLD = 4.0  # seconds the attack holds the tables before the first timed order


@dataclass
class Condition:
    name: str
    run_medians: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # ms, completed orders
    refused: Counter[str] = field(default_factory=Counter)
    attack: list[Counts] = field(default_factory=list)  # at the first order, per run and party


def buy_orders(client: HolderClient, n: int, row: Condition) -> None:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        try:
            outcome = client.buy(an_order(card_number(999999)))
        except NettxError as exc:
            row.refused[getattr(exc, "code", type(exc).__name__)] += 1
            continue
        if outcome.approved:
            times.append(1000 * (time.perf_counter() - started))
        else:
            row.refused[outcome.status] += 1
    row.latencies += times
    if times:
        row.run_medians.append(statistics.median(times))


def mounted(attacks: list[Slowloris], least: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(a.snapshot().open_now < least for a in attacks):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the attack did not mount: {[a.snapshot() for a in attacks]}")
        time.sleep(0.1)


def run(args: argparse.Namespace, client: HolderClient, ports: dict[str, int],
        rows: dict[str, Condition]) -> None:
    for r in range(args.runs):
        err.print(f"run {r + 1}/{args.runs}: no attack")
        buy_orders(client, args.orders, rows["no attack"])
        for kind in args.kinds:
            err.print(f"run {r + 1}/{args.runs}: slowloris {kind.value}")
            attacks = [Slowloris(ports[role], kind, role, connections=args.connections,
                                 tick=tuple(args.tick), duration=args.orders * 30 + 60,
                                 seed=r) for role in ("seller", "issuer")]
            row = rows[kind.value]
            try:
                for attack in attacks:
                    attack.start()
                mounted(attacks, min(args.connections, Limits().max_per_address))
                time.sleep(MOUNT_HOLD)
                row.attack += [a.snapshot() for a in attacks]
                buy_orders(client, args.orders, row)
            finally:
                for attack in attacks:
                    attack.stop()


def ms(values: list[float], q: float | None = None) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values) if q is None else percentile(values, q):.0f}"


def render(rows: dict[str, Condition], args: argparse.Namespace) -> Table:
    table = results_table(
        f"honest order latency (ms), {args.runs} runs × {args.orders} orders; attack: "
        f"{args.connections} connections on the seller and {args.connections} on the card "
        f"manager, tick {args.tick[0]:g}-{args.tick[1]:g} s",
        ("condition", "completed", "refused", "median of run medians", "median", "p90", "max",
         "attack conns open (seller / card mgr)"), left=("condition", "refused"))
    for row in rows.values():
        total = len(row.latencies) + sum(row.refused.values())
        held = " / ".join(str(c.open_now) for c in row.attack[:2]) if row.attack else "-"
        table.add_row(row.name, f"{len(row.latencies)}/{total}",
                      ", ".join(f"{k} {v}" for k, v in row.refused.items()) or "-",
                      ms(row.run_medians), ms(row.latencies), ms(row.latencies, 0.9),
                      f"{max(row.latencies):.0f}" if row.latencies else "-", held)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10, help="timed orders per condition "
                                                               "and run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs (3)")
    parser.add_argument("--connections", type=int, default=256,
                        help="attack connections per attacked party (256)")
    parser.add_argument("--tick", type=float, nargs=2, default=[8.0, 10.0],
                        help="seconds between an attack connection's sends (8 10)")
    parser.add_argument("--kinds", nargs="+", choices=[k.value for k in Kind],
                        default=[k.value for k in Kind], help="attacks to run (all)")
    parser.add_argument("--k", type=int, default=64, help="the centre's k (64)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.runs < 1 or not 1 <= args.connections <= 1024 \
            or not 0 < args.tick[0] <= args.tick[1] <= 60:
        parser.error("--orders, --runs >= 1; --connections 1..1024; 0 < tick <= 60 s")
    args.kinds = [Kind(k) for k in args.kinds]
    rows = {name: Condition(name) for name in ["no attack", *(k.value for k in args.kinds)]}

    with stopping_everything(err.print) as bench_run:
        stack = bench_run.stack
        tmp = work_dir(stack, args.keep, "nettx-slowloris-", err.print)
        world = make_world(tmp, args.k, 0)
        parties = stack.enter_context(contextlib.ExitStack())
        procs = start_parties(parties, world, tmp / "run")
        reader = InProcessReader(Applet(FileStore(world.card)))
        stack.callback(reader.close)
        session = authenticated_session(reader, CardExpectation(world.home))
        client = HolderClient(session, PIN, "127.0.0.1", procs["seller"].port,
                              seller=SELLER, max_amount=CEILING)
        run(args, client, {role: p.port for role, p in procs.items()}, rows)
    if bench_run.interrupted:
        return 130
    out = Console(highlight=False, width=max(Console().width, 160))
    out.print(f"Python {sys.version.split()[0]}, load average {load_average()}, "
              f"server limits {Limits()}")
    out.print(render(rows, args))
    return 0 if all(not r.refused for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
