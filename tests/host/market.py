"""The three parties as asyncio servers on one event loop in a background thread, on free
ports: the in-process harness for transaction tests (tests/e2e runs them as processes)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from card_applet import blom
from card_applet.applet import Applet
from card_applet.state import FileStore
from host.centre.authority import Authority
from host.centre.personalisation import personalise
from host.parties.delivery import DeliveryServer
from host.parties.issuer import IssuerServer
from host.parties.keymodule import KeyModule
from host.parties.seller import Endpoint, SellerConfig, SellerServer
from host.parties.server import PartyServer, ServerConfig
from host.protocol.order import CatalogueItem, Order, OrderForm
from host.storage import sqlite
from host.storage.ledger import Account, Ledger
from terminal.inprocess import InProcessReader
from terminal.session import CardSession

T = TypeVar("T")

SELLER, ISSUER, DELIVERY = "seller:shop.example", "issuer:bank.example", "delivery:post.example"
HOLDER = "holder:alice@example.org"
PIN, PUK = "1234", "12345678"
CARD_NUMBER, EXPIRY = "4000123412341234", "09/29"
CATALOGUE = (CatalogueItem("A-100", "smart card reader", 2500),
             CatalogueItem("B-200", "blank cards (10)", 1200),
             CatalogueItem("C-300", "USB serial adapter", 900))


def form(**overrides: Any) -> OrderForm:
    return OrderForm(**{"seller": SELLER, "issuer": ISSUER, "delivery": DELIVERY,
                        "currency": "EUR", "catalogue": CATALOGUE, **overrides})


def order(**overrides: Any) -> Order:
    fields = {"holder_name": "Alice Martin", "holder_address": "1 rue de la Paix, Paris",
              "holder_phone": "+33 1 23 45 67 89", "card_number": CARD_NUMBER,
              "card_expiry": EXPIRY, "destination": "Alice's office, 5 avenue Foch, Lyon",
              "lines": (("A-100", 1), ("B-200", 2))}
    return Order(**{**fields, **overrides})


def account(**overrides: Any) -> Account:
    fields = {"card_number": CARD_NUMBER, "holder": HOLDER, "name": "Alice Martin",
              "phone": "+33 1 23 45 67 89", "expiry": EXPIRY, "balance": 100_000}
    return Account(**{**fields, **overrides})


@dataclass
class Market:
    authority: Authority
    rows: dict[str, list[int]]
    home: Path
    servers: dict[str, PartyServer] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None
    # where the parties' stores live: None for SQLite files in the home, else a function
    # naming a location (a PostgreSQL database) for each store
    engine: Callable[[str], Path | str] | None = None

    def location(self, store: str) -> Path | str:
        """The store of `store` ("ledger", "orders" or "ship") for this market's parties."""
        if self.engine is None:
            return self.home / f"{store}.sqlite"
        return self.engine(f"{self.home.name}-{store}")

    def keys(self, identifier: str) -> KeyModule:
        return KeyModule.software(identifier, self.rows[identifier], pool=4)

    def run(self, coro: Awaitable[T]) -> T:
        assert self.loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout=60)

    def start(self, *, seller_form: OrderForm | None = None,
              config: ServerConfig | None = None,
              issuer_keys: Callable[[], KeyModule] | None = None,
              accounts: tuple[Account, ...] | None = None,
              issuer_class: type[IssuerServer] = IssuerServer,
              issuer_config: ServerConfig | None = None,
              give_up_after: float = 600.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = config or ServerConfig()
        ledger = self.location("ledger")
        seeded = Ledger(ledger)
        for acc in accounts or (account(),):
            seeded.add_account(acc)
        seeded.close()

        async def start_all() -> None:
            issuer = issuer_class(issuer_keys() if issuer_keys else self.keys(ISSUER),
                                  issuer_config or config, ledger)
            delivery = DeliveryServer(self.keys(DELIVERY), config, self.location("ship"))
            self.ports["issuer"] = await issuer.start()
            self.ports["delivery"] = await delivery.start()
            seller = SellerServer(self.keys(SELLER), config, SellerConfig(
                seller_form or form(), Endpoint("127.0.0.1", self.ports["issuer"]),
                Endpoint("127.0.0.1", self.ports["delivery"]), self.location("orders"),
                retry_every=0.2, give_up_after=give_up_after))
            self.ports["seller"] = await seller.start()
            self.servers.update(issuer=issuer, delivery=delivery, seller=seller)

        self.run(start_all())

    def stop(self) -> None:
        if self.loop is None:
            return

        async def stop_all() -> None:
            for server in self.servers.values():
                await server.close()
            # connection handlers still running (asyncio.run would do this for a server)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self.run(stop_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        assert self.thread is not None
        self.thread.join(timeout=10)
        self.loop.close()
        self.loop = None


EVIL = "issuer:evil.example"  # a real row, for another identifier: the impersonator's
ROGUE_SELLER = "seller:rogue.example"  # a genuine seller, not the one the holder means to pay
EVIL_DELIVERY = "delivery:evil.example"  # a genuine delivery row, an on-path attacker's


def holder_card(authority: Authority, path: Path, holder: str = HOLDER) -> CardSession:
    """A card made by `authority` at `path`, personalised for `holder` with PIN and PUK, in
    an in-process reader, and authenticated as the holder's terminal does before any PIN."""
    authority.manufacture_card(path)
    (row,) = authority.rows_for([blom.x_of(holder)])
    session = CardSession(InProcessReader(Applet(FileStore(path))))
    session.authenticate_card(personalise(session, authority.transport_master, holder, row,
                                          PIN, PUK))
    return session


def issue_market_rows(authority: Authority) -> dict[str, list[int]]:
    return authority.issue([SELLER, ISSUER, DELIVERY, EVIL, ROGUE_SELLER, EVIL_DELIVERY])


def dump(path: Path) -> str:
    """Everything a party wrote: its database's every row (WAL included) or its log."""
    if path.suffix != ".sqlite":
        return path.read_text(errors="replace")
    return sqlite.dump(path)
