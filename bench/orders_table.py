"""The printout of bench/orders.py: the environment line, the table of rows, a short reading
of what limits throughput, and the profile's tables."""

from __future__ import annotations

import argparse
import sqlite3
import statistics
from pathlib import Path

from rich.table import Table

from bench.meters import (
    CPUS,
    cpu_ms_per_operation,
    in_sections,
    machine_line,
    median_ms,
    percentile_ms,
    python_line,
    results_table,
    spread,
)
from bench.orders_load import WARMUP_ORDERS, WARMUP_SECONDS, Row
from bench.orders_pattern import ROLES, Counted, Pattern
from bench.orders_profile import KINDS, Profile
from bench.runs import filesystem, load_average


def environment(tmp: Path, commit_ms: float) -> str:
    fs, load = filesystem(tmp), load_average()
    return (f"{python_line()} | SQLite {sqlite3.sqlite_version} | {machine_line(load)} | "
            f"databases on {fs} ({tmp}); one WAL commit with synchronous=FULL: "
            f"{commit_ms:.2f} ms")


COLUMNS = ("run", "shop", "holder's card", "holders", "orders/s\n(min–max)", "median\nms",
           "p99\nms", "card\nms", "parties\nms", "holder\nms", "orders", "declined\n/ failed",
           "CPU %\nsel/iss/del/bench(/card)", "run-queue wait %\nsel/iss/del/bench(/card)",
           "CPU ms/order\nsel / all", "box busy %\n(others)")


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
    return (f"{cpu_ms_per_operation(seller, rate):.1f} / "
            f"{cpu_ms_per_operation(sum(ours), rate):.1f}")


def box_cell(row: Row) -> str:
    box, others = med(row, "box"), med(row, "others")
    return "" if box is None or others is None else f"{box:.0f} ({others:.0f})"


def render(rows: list[Row], args: argparse.Namespace) -> Table:
    apdus = sorted({s.apdus for r in rows for s in r.samples})
    table = results_table(
        f"nettx orders end to end (k = {args.k})", COLUMNS,
        left=("run", "shop", "holder's card"),
        no_wrap=True,
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
            "brackets what other processes than these used."))
    for row in in_sections(table, rows, lambda r: r.kind):
        bad = f"{row.declined} / {row.failed}"
        if not row.samples:
            table.add_row(row.kind, row.shop, row.card, str(row.holders), "n/a", *[""] * 6, bad,
                          *[""] * 4)
            continue
        totals = [s.total for s in row.samples]
        card = [s.card for s in row.samples]
        wire = [s.wire for s in row.samples]
        rest = [s.total - s.card - s.wire for s in row.samples]
        table.add_row(
            row.kind, row.shop, row.card, str(row.holders),
            "{} ({})".format(*spread(row.rates, ",.1f")),
            f"{median_ms(totals):.1f}", f"{percentile_ms(totals, 0.99):.1f}",
            f"{median_ms(card):.1f}", f"{median_ms(wire):.1f}", f"{median_ms(rest):.1f}",
            f"{len(row.samples):,}", bad, cpu_cell(row), cpu_cell(row, " wait"),
            per_order_cell(row), box_cell(row))
    return table


def reading(rows: list[Row], commit_ms: float, counted: Counted | None) -> list[str]:
    """What limits throughput, in a few lines computed from nettx's throughput rows."""
    levels = [r for r in rows if r.kind == "throughput" and r.shop == "nettx" and r.samples]
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
    seller_ms = cpu_ms_per_operation(cpu, rate)
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
    if counted is not None:
        seller = counted.fsyncs.get("seller", 0.0)
        lines.append(
            "Durable writes (strace, per order): " + ", ".join(
                f"{n} {v:g}" for n, v in counted.fsyncs.items()) + f" fsyncs; one WAL commit "
            f"with synchronous=FULL costs {commit_ms:.2f} ms on this disk when idle, so fsync "
            f"is ≈ {seller * commit_ms:.1f} ms of the seller's time per order.")
    return lines


def _p50(row: Row) -> float:
    return median_ms([s.total for s in row.samples])


FLOORS = ("floor", "floor-lean")  # bench/orders_floor.py: today's pattern, and LEAN


def _ratio(a: float, b: float, fmt: str = ".2f") -> str:
    return f"{a / b:{fmt}}" if b else ""


def render_floor(rows: list[Row]) -> Table:
    """nettx beside its two floors, level by level: rates, p50 and the ratios."""
    table = results_table(
        "nettx and its no-work floors, same run (throughput rows, runs interleaved)",
        ("holders", "nettx\norders/s", "floor\norders/s", "nettx ÷\nfloor",
         "floor-lean\norders/s", "nettx ÷\nfloor-lean", "nettx\np50 ms", "floor\np50 ms",
         "p50 nettx\n÷ floor", "floor-lean\np50 ms", "p50 nettx ÷\nfloor-lean"), left=(),
        caption=("floor: bench/floor_parties.py, the same processes, connections, round trips, "
                 "frame sizes and fsyncs per order at the same parties as nettx's recorded "
                 "order, and no work. floor-lean: the same frames on persistent connections "
                 "(the holder keeps one to the seller, the seller pools its own) and no fsync. "
                 "orders/s: the median run."))
    by = {(r.shop, r.holders): r for r in rows if r.kind == "throughput" and r.samples}
    for c in sorted({c for shop, c in by if shop == "nettx"}):
        ours = by[("nettx", c)]
        a = statistics.median(ours.rates)
        cells = []
        for name in FLOORS:
            floor = by.get((name, c))
            b = statistics.median(floor.rates) if floor else 0.0
            cells.append((f"{b:,.1f}" if floor else "-", _ratio(a, b) if floor else "-",
                          f"{_p50(floor):.2f}" if floor else "-",
                          _ratio(_p50(ours), _p50(floor), ".1f") if floor else "-"))
        (f_rate, f_ratio, f_p50, f_p50r), (l_rate, l_ratio, l_p50, l_p50r) = cells
        table.add_row(str(c), f"{a:,.1f}", f_rate, f_ratio, l_rate, l_ratio,
                      f"{_p50(ours):.2f}", f_p50, f_p50r, l_p50, l_p50r)
    return table


def render_latency_floor(rows: list[Row]) -> Table:
    """One holder, orders back to back: nettx's p50 (each of its cards) beside each floor's."""
    lat = [r for r in rows if r.kind == "latency" and r.samples]
    floors = {r.shop: r for r in lat if r.shop in FLOORS}
    table = results_table(
        "one holder, orders back to back: nettx's p50 and its floors' (latency blocks, "
        "alternating)",
        ("nettx's holder card", "nettx p50 ms",
         *(h for name in FLOORS for h in (f"{name}\np50 ms", f"nettx ÷\n{name}"))),
        left=("nettx's holder card",),
        caption=("The floors' holders have no card: \"card\" in the main table is the part "
                 "of nettx's p50 that no floor has."))
    for row in lat:
        if row.shop != "nettx":
            continue
        cells = []
        for name in FLOORS:
            floor = floors.get(name)
            cells += ([f"{_p50(floor):.2f}", _ratio(_p50(row), _p50(floor), ".1f")]
                      if floor else ["-", "-"])
        table.add_row(row.card, f"{_p50(row):.2f}", *cells)
    return table


def render_cpu(rows: list[Row]) -> Table:
    """CPU ms per completed order, per process, each shop and level."""
    names = ("seller", "issuer", "delivery", "bench")
    table = results_table(
        "CPU ms per order, per process (throughput rows)",
        ("shop", "holders", *names, "all"), left=("shop",),
        caption=("/proc/PID/task/*/schedstat over the timed window ÷ the orders counted in it "
                 "(median run). issuer = the card manager; bench = this process: the holders "
                 "(their software cards and the holder's CBOR for nettx; the floor's holders "
                 "only send and read frames)."))
    for row in rows:
        if row.kind != "throughput" or not row.samples:
            continue
        rate = statistics.median(row.rates)
        cells = [cpu_ms_per_operation(v, rate) if (v := med(row, n)) is not None else None
                 for n in names]
        table.add_row(row.shop, str(row.holders),
                      *["-" if v is None else f"{v:.2f}" for v in cells],
                      f"{sum(v for v in cells if v is not None):.2f}")
    return table


def render_pattern(counted: list[Counted], pattern: Pattern) -> Table:
    """Round trips, connections and fsyncs per order, counted for each shop."""
    table = results_table(
        "an order's pattern, counted (one holder, orders back to back; and several at once)",
        ("shop", "orders", "round trips\n(strace)", "round trips\n(recorded)",
         "new TCP\nconnections", "connect()\nsel/iss/del", "fsyncs\nsel/iss/del",
         "frames sent\nsel/iss/del"), left=("shop",),
        caption=("strace -f -ttt of the party processes over the orders' window, ÷ orders: "
                 "connections = accept() at the three parties (the holder's are those beyond "
                 "the seller's connect()s); fsyncs = fsync + fdatasync; frames sent = sendto + "
                 "sendmsg (one per frame: frames are small, loopback's buffers large). Only the "
                 "seller asks the card manager and the delivery company, each of their frames "
                 "answers one, so round trips (strace) = the seller's frames sent. round trips "
                 "(recorded): answers on accepted connections, nettx from the recorder wrapping "
                 "host.parties.connection.AsyncConnection in each party, the floor from the "
                 "script it replays; with several holders, the seller's frames sent. With "
                 "several holders at once, a party's group commit covers several orders' "
                 "decisions with one fsync.\n"
                 "nettx's recorded order as the seller saw it (type:bytes): "
                 + ", ".join(pattern.frames())
                 + "\nrecorded durable commits (host.storage.sqlite, both commit paths): "
                 + ", ".join(f"{r} {n}" for r, n in pattern.commits().items())))
    for c in counted:
        table.add_row(c.shop, str(c.orders), f"{c.sends.get('seller', 0):g}",
                      f"{c.round_trips:g}", f"{c.connections:g}",
                      *(" / ".join(f"{per.get(r, 0):g}" for r in ROLES)
                        for per in (c.connects, c.fsyncs, c.sends)))
    return table


def render_profile(profiles: list[Profile], level: int) -> Table:
    cpu = profiles[0].clock == "cpu"
    if cpu:
        clock = ("CPU time of the event-loop thread (cProfile on time.thread_time): the idle "
                 "row is epoll's own CPU, not its wait, and a call that wakes a peer is not "
                 "charged the time the peer ran. SQLite on the loop is its statements; the "
                 "COMMIT and its fsync run on the database's thread, not counted here. ")
    else:
        clock = ("Wall-clock own time (cProfile's default timer), so a kind also holds the "
                 "time the process was preempted there: mostly in socket send/connect, which "
                 "wake a peer on this small machine. ")
    table = results_table(
        f"where the parties' time goes: cProfile, {level} holders "
        f"(ms of {'CPU of ' if cpu else ''}the party's one event-loop thread per completed "
        "order)",
        ["kind", *(p.role for p in profiles)], left=("kind",),
        caption=(clock + "cProfile's overhead inflates the Python kinds (roughly ×1.5–2).\n"
                 "busy = all but idle; 1000 ÷ busy ≈ orders/s that party's one thread could "
                 "carry under the profiler."))
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
    table = results_table("top functions by own time (s over the window)",
                          ("party", "function", "s"), left=("party", "function"))
    for p in profiles:
        for where, tt in p.top:
            table.add_row(p.role, where[:110], f"{tt:.3f}")
        table.add_section()
    return table
