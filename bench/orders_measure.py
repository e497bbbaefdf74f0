"""The measurements of bench/orders.py, each a list of table rows: latency (one holder, its
card through the embedded reader and in-process), throughput (C holders per shop), and the
cost of one durable commit on the disk the databases are on."""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.markup import escape

from bench.meters import median_ms
from bench.orders_load import WARMUP_SECONDS, Row, Shop, buy_block, meter_for, run_level
from bench.orders_market import PIN, NettxShop, buyer, card_number, err
from card_applet.applet import Applet
from card_applet.state import FileStore
from host.centre.pairing import CardExpectation, authenticated_session
from host.cli.cardaccess import open_card
from terminal.inprocess import InProcessReader

# -- latency: one holder, the card on the embedded reader vs in-process -----------------------


def latency_phase(shop: NettxShop, args: argparse.Namespace, log_dir: Path,
                  floors: Sequence[Shop] = ()) -> list[Row]:
    """One holder, orders back to back, its card a card process on the embedded reader
    and, alternating in blocks, the same EEPROM file in-process; then each floor's holder,
    a block each in the same rounds."""
    world = shop.world
    embedded = Row("latency", "card process, embedded", 1)
    inproc = Row("latency", "same file, in-process", 1)
    floor_rows = [Row("latency", f.holder_card, 1, f.name) for f in floors]
    floor_buyers = [f.buyers(1)[0] for f in floors]
    number = card_number(999999)
    per_block = max(1, math.ceil(args.orders / args.repeats))
    for block in range(args.repeats):
        err.print(f"latency: block {block + 1}/{args.repeats} ({per_block} orders per reader)")
        # the card process must be gone before the in-process applet loads the same file:
        # two applets on one EEPROM would each keep their own transaction counter
        with open_card(None, world.card, log_dir / "card.log") as reader:
            card_pid = _card_pid(world.card)
            meter = meter_for(shop, **({"card": card_pid} if card_pid else {}))
            session = authenticated_session(reader, CardExpectation(world.home))
            try:
                buy_block(embedded, buyer(session, PIN, shop.port, number), per_block, meter)
            except Exception as exc:
                embedded.error(exc)
        reader = InProcessReader(Applet(FileStore(world.card)))
        try:
            session = authenticated_session(reader, CardExpectation(world.home))
            buy_block(inproc, buyer(session, PIN, shop.port, number), per_block,
                      meter_for(shop))
        except Exception as exc:
            inproc.error(exc)
        finally:
            reader.close()
        for floor, row, floor_buyer in zip(floors, floor_rows, floor_buyers, strict=True):
            buy_block(row, floor_buyer, per_block, meter_for(floor))
    return [embedded, inproc, *floor_rows]


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


def throughput_phase(shops: Sequence[Shop], args: argparse.Namespace) -> list[Row]:
    """C holders per shop at each level, runs interleaved over levels and shops."""
    holders = {shop.name: shop.buyers(max(args.levels)) for shop in shops}
    rows = {(shop.name, c): Row("throughput", shop.holder_card, c, shop.name)
            for c in args.levels for shop in shops}
    for rep in range(args.repeats):
        for c in args.levels:
            for shop in shops:
                err.print(f"throughput: run {rep + 1}/{args.repeats}, {c} holder(s) of "
                          f"{shop.name}, {WARMUP_SECONDS:g} + {args.seconds:g} s")
                run_level(rows[(shop.name, c)], holders[shop.name][:c], args.seconds,
                          meter_for(shop))
    return list(rows.values())


# -- the disk ---------------------------------------------------------------------------------


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


def guarded(rows: list[Row], what: str, fn: Callable[[], list[Row]]) -> None:
    try:
        rows += fn()
    except Exception as exc:
        err.print(escape(f"{what} failed: {type(exc).__name__}: {exc}"), style="red")
        row = Row(what, f"error: {type(exc).__name__}: {exc}"[:80], 0)
        rows.append(row)
