"""bench/orders.py --engine: the same market on each storage engine, in one run.

Configurations: SQLite with one instance of each party (a SQLite file is one process's), and
PostgreSQL with each of --instances instances of the seller and of the card manager (one
delivery company), all instances of a party on one database. Seller instance i asks card
manager instance i; the holders are spread over the seller instances round robin. The
PostgreSQL server is the tests' private one (tests/pg.py: initdb + pg_ctl as an unprivileged
user, loopback, a free port), here with fsync on (`durable`), as SQLite runs with
synchronous=FULL; started by this bench and stopped by PID. Each configuration gets a fresh
database, and the ledger is seeded anew.

All configurations run side by side, their runs interleaved. Per configuration and level
(--levels holders, one thread each, --seconds per run, --repeats runs): orders/s (median of
the runs), p50 latency of one order, the CPU per order of the database server (the
postmaster and its backends, from /proc: tests/pg.py's server runs them as children of the
postmaster) and of the party processes together. SQLite has no server: its database
work is inside the parties' CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from bench.meters import CpuMeter, TreeCpuMeter, cpu_ms_per_operation, median_ms, results_table
from bench.orders_load import Buyer, Row, run_level
from bench.orders_market import DELIVERY, ISSUER, World, err, software_buyers
from host.cli.partyproc import PartyProcess
from host.storage.location import Location

SERVER = "database server"


@dataclass(frozen=True)
class Config:
    engine: str  # sqlite | postgresql
    instances: int  # of the seller and of the card manager

    @property
    def name(self) -> str:
        return f"{self.engine} x{self.instances}"


def configurations(engines: list[str], instances: list[int]) -> list[Config]:
    configs = [Config("sqlite", 1)] if "sqlite" in engines else []
    if "postgresql" in engines:
        configs += [Config("postgresql", n) for n in sorted(set(instances))]
    return configs


@dataclass
class EngineShop:
    """The parties of one configuration: N sellers, N card managers, one delivery company."""

    world: World
    procs: dict[str, PartyProcess]
    sellers: list[int]  # their ports

    def processes(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def buyers(self, n: int) -> list[Buyer]:
        per_port = [software_buyers(self.world, port, n) for port in self.sellers]
        return [per_port[i % len(self.sellers)][i] for i in range(n)]


def start(stack: contextlib.ExitStack, world: World, run_dir: Path, config: Config,
          url: str | None) -> EngineShop:
    """The card managers, the delivery company, then the sellers; each stopped by PID."""
    run_dir.mkdir(parents=True, exist_ok=True)

    def store(role: str) -> Location:
        # SQLite: a file per party, as in production; PostgreSQL: one database for all
        return url if url is not None else run_dir / f"{role}.sqlite"

    world.seed_ledger(store("issuer"))  # type: ignore[arg-type]
    procs: dict[str, PartyProcess] = {}

    def party(role: str, name: str, *args: str) -> PartyProcess:
        proc = PartyProcess(role, ["--key", str(world.row_file(role)),
                                   "--db", str(store(role)), *args], run_dir / f"{name}.log")
        stack.callback(proc.stop)
        procs[name] = proc
        err.print(f"{config.name}: {name} pid {proc.pid} on port {proc.port}")
        return proc

    issuers = [party("issuer", f"issuer-{i + 1}") for i in range(config.instances)]
    delivery = party("delivery", "delivery")
    sellers = [party("seller", f"seller-{i + 1}",
                     "--catalogue", str(world.home / "catalogue.json"),
                     "--issuer", f"127.0.0.1:{issuer.port}", "--issuer-id", ISSUER,
                     "--delivery", f"127.0.0.1:{delivery.port}", "--delivery-id", DELIVERY)
               for i, issuer in enumerate(issuers)]
    return EngineShop(world, procs, [s.port for s in sellers])


class BothMeters:
    """The parties' and this process's CPU (CpuMeter) and the database server's."""

    def __init__(self, parties: CpuMeter, server: TreeCpuMeter | None) -> None:
        self.parties, self.server = parties, server

    def start(self) -> None:
        self.parties.start()
        if self.server is not None:
            self.server.start()

    def stop(self) -> dict[str, float]:
        out = self.parties.stop()
        if self.server is not None:
            out |= self.server.stop()
        return out


def engines_phase(world: World, args: argparse.Namespace, tmp: Path) -> list[Row]:
    """Every configuration's parties started at once (on their own files, databases and
    ports; idle ones cost nothing), then the runs interleaved over levels and configurations,
    so background load on the machine hits them all alike; the PostgreSQL server started here
    for all of them."""
    configs = configurations(args.engine, args.instances)
    with contextlib.ExitStack() as stack:
        server = None
        if any(c.engine == "postgresql" for c in configs):
            from tests.pg import PostgresServer

            server = PostgresServer()
            stack.callback(server.destroy)
            server.start(durable=True)  # fsync on, as SQLite's synchronous=FULL
            err.print(f"PostgreSQL: postmaster pid {server.pid} on port {server.port} "
                      f"({server.bin})")
        shops: dict[Config, EngineShop] = {}
        for config in configs:
            url = None
            if config.engine == "postgresql":
                assert server is not None
                url = server.create_database(f"bench_{config.instances}")
            shops[config] = start(stack, world, tmp / config.name.replace(" ", "-"), config,
                                  url)
        holders = {config: shop.buyers(max(args.levels)) for config, shop in shops.items()}
        rows = {(config, c): Row("throughput", "software", c, config.name)
                for config in configs for c in args.levels}
        for rep in range(args.repeats):
            for c in args.levels:
                for config, shop in shops.items():
                    err.print(f"{config.name}: run {rep + 1}/{args.repeats}, {c} holder(s), "
                              f"{args.seconds:g} s")
                    server_meter = None
                    if config.engine == "postgresql" and server is not None \
                            and server.pid is not None:
                        server_meter = TreeCpuMeter(SERVER, server.pid)
                    run_level(rows[(config, c)], holders[config][:c], args.seconds,
                              BothMeters(CpuMeter(shop.processes()), server_meter))
    return sorted(rows.values(), key=lambda r: (configs.index(next(
        c for c in configs if c.name == r.shop)), r.holders))


def render_engines(rows: list[Row]) -> Table:
    table = results_table(
        "orders by storage engine", ["engine x instances", "holders", "orders/s", "p50 ms",
                                     "DB server CPU ms/order", "parties CPU ms/order",
                                     "declined", "failed"],
        left=["engine x instances"],
        caption="instances: of the seller and of the card manager (one delivery company); "
                "orders/s the median of the runs; CPU per order from /proc over the timed "
                "window (SQLite's database work is inside the parties' CPU)")
    for row in rows:
        rate = statistics.median(row.rates) if row.rates else 0.0
        p50 = median_ms([s.total for s in row.samples]) if row.samples else 0.0
        server = statistics.median(row.cpu[SERVER]) if SERVER in row.cpu else None
        party_names = [n for n in row.cpu if n.split("-")[0] in ("seller", "issuer", "delivery")
                       and not n.endswith(" wait")]
        parties = sum(statistics.median(row.cpu[n]) for n in party_names)
        table.add_row(row.shop, str(row.holders), f"{rate:,.1f}", f"{p50:,.1f}",
                      "-" if server is None else f"{cpu_ms_per_operation(server, rate):.2f}",
                      f"{cpu_ms_per_operation(parties, rate):.2f}", str(row.declined),
                      str(row.failed))
    return table
