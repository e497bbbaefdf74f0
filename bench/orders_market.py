"""The market bench/orders.py measures: a centre, the rows, the three parties as real
processes on 127.0.0.1, the holders' accounts and cards, and nettx as a `Shop` the load
(bench/orders_load.py) drives.

The parties are `nettx -v ROLE serve --key ROW --db DB --listen 127.0.0.1:0`
(host.cli.partyproc.PartyProcess), each with a software row and a durable SQLite database
(WAL, synchronous=FULL); the holders are HolderClient.buy in the bench process.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from bench.orders_load import TALLY, Buyer
from card_applet.applet import Applet
from card_applet.state import FileStore
from host.centre.authority import Authority, write_row_file
from host.centre.pairing import Keyring
from host.centre.personalisation import personalise
from host.cli.partyproc import PartyProcess
from host.parties.connection import Connection
from host.parties.holder import HolderClient
from host.parties.softcard import software_card
from host.protocol.messages import Message
from host.protocol.order import Order
from host.storage.ledger import Account, Ledger
from terminal.inprocess import InProcessReader
from terminal.session import CardSession

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

err = Console(stderr=True, highlight=False)


def holder_id(i: int) -> str:
    return f"holder:bench-{i}@example.org"


def card_number(i: int) -> str:
    return f"4970{i:012d}"  # 16 digits; the latency card is i = 999999


def an_order(number: str) -> Order:
    return Order(holder_name=NAME, holder_address="1 rue de la Paix, Paris",
                 holder_phone=PHONE, card_number=number, card_expiry=EXPIRY,
                 destination="5 avenue Foch, Lyon", lines=LINES)


# -- what an order spends where ----------------------------------------------------------------


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
            TALLY.add("card ns", time.perf_counter_ns() - t)
            TALLY.add("apdus")

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
            TALLY.add("wire ns", time.perf_counter_ns() - t)


def timed_session(session: CardSession) -> CardSession:
    """Route an existing session's APDUs through TimedReader."""
    session.protocol.reader = TimedReader(session.protocol.reader)
    return session


# -- setting up -------------------------------------------------------------------------------


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


def start_parties(stack: contextlib.ExitStack, world: World, run_dir: Path,
                  env: dict[str, str] | None = None) -> dict[str, PartyProcess]:
    """issuer, delivery, then seller (it needs their ports); each stopped by PID. `env`:
    more of their environment (NETTX_LOOP=uvloop|asyncio, the event loop)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    world.seed_ledger(run_dir / "issuer.sqlite")
    procs: dict[str, PartyProcess] = {}
    ports: dict[str, int] = {}
    for role in ("issuer", "delivery", "seller"):
        proc = PartyProcess(role, world.party_args(role, run_dir / f"{role}.sqlite", ports),
                            run_dir / f"{role}.log", env=env)
        stack.callback(proc.stop)
        procs[role], ports[role] = proc, proc.port
        err.print(f"{role} pid {proc.pid} on port {proc.port}")
    return procs


# -- nettx as the load sees it ----------------------------------------------------------------


@dataclass(frozen=True)
class NettxBuyer:
    """A holder of nettx: `nettx buy` without the command line."""

    client: HolderClient
    order: Order

    def buy(self) -> tuple[str, str]:
        outcome = self.client.buy(self.order)
        return outcome.status, outcome.reason


def buyer(session: CardSession, pin: str, port: int, number: str,
          keep_connection: bool = False) -> NettxBuyer:
    return NettxBuyer(HolderClient(timed_session(session), pin, "127.0.0.1", port,
                                   seller=SELLER, max_amount=CEILING,
                                   keep_connection=keep_connection), an_order(number))


class PartyProcesses:
    """A shop whose parties are processes (`procs`, by role): where its seller listens and
    which processes the meters watch."""

    procs: dict[str, PartyProcess]

    @property
    def port(self) -> int:
        return self.procs["seller"].port

    def processes(self) -> dict[str, int]:
        return {role: p.pid for role, p in self.procs.items()}


@dataclass(frozen=True)
class NettxShop(PartyProcesses):
    """The three party processes; its throughput holders' cards are software cards."""

    world: World
    procs: dict[str, PartyProcess]
    name: str = "nettx"
    holder_card: str = "software, MemoryStore"
    #: the throughput holders keep their connection to the seller between orders
    keep_connections: bool = False

    def buyers(self, n: int) -> list[Buyer]:
        return software_buyers(self.world, self.port, n, self.keep_connections)


def software_buyers(world: World, port: int, n: int,
                    keep_connections: bool = False) -> list[Buyer]:
    return [buyer(software_card(holder_id(i), world.rows[holder_id(i)]), SOFT_PIN, port,
                  card_number(i), keep_connections) for i in range(n)]
