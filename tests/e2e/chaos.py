"""A seeded chaos run: the three parties as processes, holders buying continuously, a random
party killed with SIGKILL every 0.3 to 1.5 s and restarted on the same port; then, after a grace
period with every party up, the databases are read directly and checked:

- no double debit: each account's balance is its initial balance minus its standing debits;
- every debit shipped or reversed, and every shipment authorised by a debit that stands;
- every holder outcome agrees with the ledger and the shipments (a holder told `completed`
  has a standing debit and a shipment with that tracking reference; `declined` a decline;
  `failed` no charge and no shipment), and with the seller's record;
- nothing stuck: every order the seller received is final, every holder has a final answer.

With `--instances N` (and the stores on PostgreSQL, `--postgresql URL`, one database holding
the three parties' stores) each party runs as N processes on the same stores: holder i buys
from seller i mod N, seller j asks card manager and delivery company j mod N, an order a killed
seller was driving is taken over by another once its claim expires, and a retransmission
reaches whichever instance the resuming seller talks to. `restart_database` (tests) restarts
the database server once, half-way through, under the running parties.

    .venv/bin/python -m tests.e2e.chaos [--seconds 60] [--holders 4] [--seed 11]
                                        [--grace 90] [--work-dir DIR]

`make chaos` runs it longer (CHAOS_SECONDS, CHAOS_HOLDERS, CHAOS_SEED);
tests/e2e/test_chaos.py runs it for about a minute. Exit 0 only without violations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.centre.authority import Authority, write_row_file
from host.cli.partyproc import PartyProcess
from host.errors import TransactionError
from host.parties.holder import HolderClient
from host.parties.softcard import software_card
from host.protocol.envelope import SealedOrder
from host.protocol.order import Order
from host.storage.ledger import Account, Ledger
from host.storage.order_book import OrderBook
from host.storage.shipments import Shipments
from terminal.errors import NettxError

SELLER, ISSUER, DELIVERY = "seller:shop.example", "issuer:bank.example", "delivery:post.example"
IDENT = {"seller": SELLER, "issuer": ISSUER, "delivery": DELIVERY}
ROLES = ("issuer", "delivery", "seller")  # start order: the seller needs the others' ports
NAME, PHONE, EXPIRY = "Chaos Holder", "+33 1 23 45 67 89", "09/29"
CATALOGUE = {"currency": "EUR", "items": [
    {"number": "A-100", "name": "smart card reader", "unit_price": 2490},
    {"number": "B-200", "name": "blank cards", "unit_price": 1250}]}
LINES = (("A-100", 1), ("B-200", 2))
PRICE = 2490 + 2 * 1250
RICH = 10**12
POOR = 5 * PRICE  # holder 0 runs out after five orders: declines are part of the run
FINAL = ("completed", "declined", "failed")


def holder_id(i: int) -> str:
    return f"holder:chaos-{i}@example.org"


def card_number(i: int) -> str:
    return f"4971{i:012d}"


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    seconds: float = 60.0  # how long holders buy while parties are killed
    holders: int = 4
    seed: int = 11
    grace: float = 90.0  # after the kills stop: time for the seller to finish every order
    kill_min: float = 0.3
    kill_max: float = 1.5
    k: int = 16
    instances: int = 1  # processes per party, sharing its store
    postgresql: str | None = None  # the stores' database; None: a SQLite file per party
    restart_database: Callable[[], None] | None = None  # once, half-way (PostgreSQL)

    def store(self, home: Path, role: str) -> Path | str:
        """Where `role`'s store lives (every instance of it shares it)."""
        return self.postgresql if self.postgresql is not None else home / f"{role}.sqlite"


@dataclass
class HolderRecord:
    """What one holder was told about one order (status None: no final answer yet)."""

    holder: int
    sealed: SealedOrder
    status: str | None = None
    tracking: str | None = None
    error: str | None = None

    @property
    def order_id(self) -> bytes:
        return self.sealed.header.order_id


@dataclass
class Report:
    orders: int = 0  # orders the seller received
    holder_orders: int = 0  # envelopes the holders sealed and sent (or tried to)
    kills: Counter[str] = field(default_factory=Counter)
    database_restarts: int = 0
    seller_status: Counter[str] = field(default_factory=Counter)
    voided: int = 0  # orders that went through voiding
    stuck: int = 0
    holder_errors: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, object]:
        return {
            "orders": self.orders, "holder_orders": self.holder_orders,
            "kills": dict(sorted(self.kills.items())),
            "database_restarts": self.database_restarts,
            "completed": self.seller_status["completed"],
            "declined": self.seller_status["declined"],
            "failed": self.seller_status["failed"], "voided": self.voided,
            "stuck": self.stuck, "holder_errors": dict(self.holder_errors),
            "violations": len(self.violations),
        }


def instance_name(role: str, j: int, instances: int) -> str:
    return role if instances == 1 else f"{role}-{j}"


def role_of(name: str) -> tuple[str, int]:
    role, _, j = name.partition("-")
    return role, int(j or 0)


class Parties:
    """The party processes (`instances` of each role), restartable on the ports they first
    bound."""

    def __init__(self, home: Path, config: ChaosConfig | None = None) -> None:
        self.home = home
        self.config = config or ChaosConfig()
        self.procs: dict[str, PartyProcess] = {}
        self.ports: dict[str, int] = {}

    def names(self, role: str) -> list[str]:
        n = self.config.instances
        return [instance_name(role, j, n) for j in range(n)]

    def args(self, name: str) -> list[str]:
        role, j = role_of(name)
        args = ["--key", str(self.home / f"{role}.row.json"),
                "--db", str(self.config.store(self.home, role))]
        if role == "seller":
            n = self.config.instances
            issuer = self.ports[instance_name("issuer", j % n, n)]
            delivery = self.ports[instance_name("delivery", j % n, n)]
            args += ["--catalogue", str(self.home / "catalogue.json"),
                     "--issuer", f"127.0.0.1:{issuer}", "--issuer-id", ISSUER,
                     "--delivery", f"127.0.0.1:{delivery}",
                     "--delivery-id", DELIVERY]
        return args

    def start(self, name: str, extra: Sequence[str] = ()) -> None:
        """Start `name` (again, on its port); `extra`: more options, such as a crash point."""
        port = self.ports.get(name, 0)
        role, _j = role_of(name)
        for attempt in range(50):  # the port may take a moment to be free again
            try:
                proc = PartyProcess(role, [*self.args(name), *extra],
                                    self.home / f"{name}.log", port=port)
                break
            except TransactionError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        self.procs[name], self.ports[name] = proc, proc.port

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.kill()
        proc.stop()  # closes its log handle; the process is gone already

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def make_world(home: Path, config: ChaosConfig) -> dict[int, int]:
    """Rows, row files, catalogue and accounts; returns each holder's initial balance."""
    centre = Authority(home / "centre")
    centre.init(k=config.k)
    rows = centre.issue([SELLER, ISSUER, DELIVERY,
                         *(holder_id(i) for i in range(config.holders))])
    for role, ident in IDENT.items():
        write_row_file(home / f"{role}.row.json", ident, rows[ident])
    (home / "catalogue.json").write_text(json.dumps(CATALOGUE))
    (home / "rows.json").write_text(json.dumps({holder_id(i): rows[holder_id(i)]
                                                for i in range(config.holders)}))
    balances = {i: POOR if i == 0 else RICH for i in range(config.holders)}
    ledger = Ledger(config.store(home, "issuer"))
    try:
        for i, balance in balances.items():
            ledger.add_account(Account(card_number(i), holder_id(i), NAME, PHONE, EXPIRY,
                                       balance))
    finally:
        ledger.close()
    return balances


def an_order(i: int) -> Order:
    return Order(holder_name=NAME, holder_address="1 rue de la Paix, Paris",
                 holder_phone=PHONE, card_number=card_number(i), card_expiry=EXPIRY,
                 destination=f"{i} avenue Foch, Lyon", lines=LINES)


class Holders:
    """One thread per holder, each with its own software card, buying back to back."""

    def __init__(self, home: Path, config: ChaosConfig, seller_ports: list[int]) -> None:
        rows = json.loads((home / "rows.json").read_text())
        self.clients = [HolderClient(software_card(holder_id(i), rows[holder_id(i)]), "0000",
                                     "127.0.0.1", seller_ports[i % len(seller_ports)],
                                     seller=SELLER,
                                     max_amount="1000000")
                        for i in range(config.holders)]
        self.records: list[HolderRecord] = []
        self.errors: Counter[str] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._buy, args=(i,), daemon=True)
                        for i in range(config.holders)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
            if t.is_alive():
                raise RuntimeError("a holder did not finish its last order within 120 s")

    def _buy(self, i: int) -> None:
        client = self.clients[i]
        while not self.stop.is_set():
            client.last_sealed = None
            try:
                outcome = client.buy(an_order(i))
                status = outcome.status if outcome.status in FINAL else None
                record = HolderRecord(i, self._sealed(client), status, outcome.tracking)
            except NettxError as exc:
                with self.lock:
                    self.errors[getattr(exc, "code", type(exc).__name__)] += 1
                if client.last_sealed is None:  # nothing was sealed: no order exists
                    time.sleep(0.05)
                    continue
                # the envelope may have reached the seller: ask about it later
                record = HolderRecord(i, client.last_sealed, error=str(exc))
                time.sleep(0.05)
            with self.lock:
                self.records.append(record)

    @staticmethod
    def _sealed(client: HolderClient) -> SealedOrder:
        assert client.last_sealed is not None
        return client.last_sealed

    def settle(self, deadline: float) -> None:
        """Ask the seller about every order without a final answer, until the deadline."""
        for record in self.records:
            client = self.clients[record.holder]
            while record.status is None and time.monotonic() < deadline:
                try:
                    outcome = client.status(record.sealed)
                except TransactionError as exc:
                    if exc.code == "unknown-order":  # it never reached the seller
                        record.status = "unknown-order"
                        break
                    time.sleep(0.5)
                    continue
                if outcome.status in FINAL:
                    record.status, record.tracking = outcome.status, outcome.tracking
                else:
                    time.sleep(0.5)


STORES: dict[str, Callable[[Path | str], Any]] = {
    "issuer": Ledger, "delivery": Shipments, "seller": OrderBook}


def rows(config: ChaosConfig, home: Path, role: str, query: str) -> list[tuple[Any, ...]]:
    """`query` on `role`'s store, on whichever engine it is, through the store's own engine."""
    store = STORES[role](config.store(home, role))
    try:
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in store.db.read(lambda tx: tx.all(query))]
    finally:
        store.close()


def wait_until_settled(config: ChaosConfig, home: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(TransactionError):  # the database restarting, say
            (left,), = rows(config, home, "seller", "SELECT count(*) FROM orders WHERE status "
                                                    "NOT IN ('completed', 'declined', 'failed')")
            if left == 0:
                return
        time.sleep(0.5)


def check(home: Path, initial: dict[int, int], records: list[HolderRecord],
          report: Report, config: ChaosConfig | None = None) -> None:
    """Read the three databases directly and list every broken rule."""
    config = config or ChaosConfig()
    bad = report.violations.append
    ledger = {r[0]: (r[1], r[2], r[3]) for r in rows(
        config, home, "issuer", "SELECT order_id, code, amount, card_number FROM authorisations")}
    shipped = {r[0]: r[1] for r in rows(config, home, "delivery",
                                        "SELECT order_id, tracking FROM shipments")}
    seller = {r[0]: (r[1], r[2]) for r in rows(config, home, "seller",
                                               "SELECT order_id, status, note FROM orders")}
    balance = {r[0]: r[1] for r in rows(config, home, "issuer",
                                        "SELECT card_number, balance FROM accounts")}
    report.orders = len(seller)
    report.holder_orders = len(records)
    report.seller_status = Counter(status for status, _note in seller.values())
    report.voided = sum(1 for _status, note in seller.values() if note is not None)
    report.stuck = sum(1 for status, _note in seller.values() if status not in FINAL)
    report.stuck += sum(1 for r in records if r.status is None)

    # no double debit: balances are the initial ones minus the debits that stand
    for i, start in initial.items():
        debits = sum(amount for code, amount, card in ledger.values()
                     if code == "approved" and card == card_number(i))
        if balance[card_number(i)] != start - debits:
            bad(f"holder {i}: balance {balance[card_number(i)]} != {start} - {debits}")
    for oid, (code, _amount, _card) in ledger.items():
        if oid not in seller:
            bad(f"{oid.hex()}: the card manager decided ({code}) an order the seller never had")
        if code == "approved" and oid not in shipped:
            bad(f"{oid.hex()}: debited, neither shipped nor reversed")
    for oid in shipped:
        code = ledger.get(oid, ("none",))[0]
        if code != "approved":
            bad(f"{oid.hex()}: shipped without a standing debit (card manager: {code})")
    for oid, (status, _note) in seller.items():
        code = ledger.get(oid, ("none",))[0]
        expected = {"completed": code == "approved" and oid in shipped,
                    "declined": code == "declined" and oid not in shipped,
                    "failed": code != "approved" and oid not in shipped}
        if status in expected and not expected[status]:
            bad(f"{oid.hex()}: seller says {status}, card manager {code}, "
                f"{'shipped' if oid in shipped else 'not shipped'}")
    for r in records:
        oid = r.order_id
        code = ledger.get(oid, ("none",))[0]
        if r.status == "completed":
            if code != "approved" or shipped.get(oid) != r.tracking:
                bad(f"{oid.hex()}: holder told completed ({r.tracking}), card manager {code}, "
                    f"shipment {shipped.get(oid)}")
        elif r.status == "declined":
            if code != "declined" or oid in shipped:
                bad(f"{oid.hex()}: holder told declined, card manager {code}")
        elif r.status in ("failed", "unknown-order") and (code == "approved" or oid in shipped):
            bad(f"{oid.hex()}: holder told {r.status}, card manager {code}, "
                f"{'shipped' if oid in shipped else 'not shipped'}")
        if r.status in FINAL and seller.get(oid, (None,))[0] != r.status:
            bad(f"{oid.hex()}: holder told {r.status}, seller has {seller.get(oid)}")


def run(config: ChaosConfig, home: Path) -> Report:
    report = Report()
    initial = make_world(home, config)
    parties = Parties(home, config)
    holders: Holders | None = None
    try:
        names = [name for role in ROLES for name in parties.names(role)]
        for name in names:
            parties.start(name)
        holders = Holders(home, config, [parties.ports[n] for n in parties.names("seller")])
        holders.start()
        rng = random.Random(config.seed)
        start = time.monotonic()
        end = start + config.seconds
        restart_at = start + config.seconds / 2 if config.restart_database else None
        while time.monotonic() < end:
            time.sleep(rng.uniform(config.kill_min, config.kill_max))
            if restart_at is not None and time.monotonic() >= restart_at:
                assert config.restart_database is not None
                config.restart_database()  # under the running parties
                report.database_restarts += 1
                restart_at = None
                continue
            name = rng.choice(names)
            parties.kill(name)
            report.kills[name] += 1
            parties.start(name)
        holders.join()
        deadline = time.monotonic() + config.grace
        wait_until_settled(config, home, deadline)
        holders.settle(deadline)
    finally:
        if holders is not None:
            holders.stop.set()
        parties.stop()
    report.holder_errors = holders.errors
    check(home, initial, holders.records, report, config)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--holders", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--grace", type=float, default=120.0)
    parser.add_argument("--work-dir", type=Path, help="keep databases and logs here")
    parser.add_argument("--instances", type=int, default=1,
                        help="processes per party, sharing its store (use with --postgresql)")
    parser.add_argument("--postgresql", metavar="URL",
                        help="keep the three parties' stores in this PostgreSQL database")
    args = parser.parse_args(argv)
    config = ChaosConfig(seconds=args.seconds, holders=args.holders, seed=args.seed,
                         grace=args.grace, instances=args.instances,
                         postgresql=args.postgresql)
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nettx-chaos-")))
        else:
            home = args.work_dir
            home.mkdir(parents=True, exist_ok=False)
        started = time.monotonic()
        report = run(config, home)
        figures = report.figures() | {"seconds": round(time.monotonic() - started),
                                      "seed": config.seed, "holders": config.holders}
        print(json.dumps(figures, indent=2))
        for line in report.violations[:50]:
            print("VIOLATION", line)
    return 1 if report.violations or report.stuck else 0


if __name__ == "__main__":
    sys.exit(main())
