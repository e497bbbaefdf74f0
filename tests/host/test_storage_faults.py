"""Database faults: a failed COMMIT is rolled back; a full disk is answered `internal` and the
order completes once there is space again; an I/O error (a failed write or fsync) stops the
party, which recovers from its database on restart.

Faults are injected at the transaction helper's level (sqlite3 cannot load a VFS from
Python): a connection wrapper makes chosen statements raise the errors SQLite raises.
test_storage_full_disk.py fills a real (tmpfs) disk."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from host.errors import TransactionError
from host.parties.connection import Connection
from host.parties.delivery import DeliveryServer
from host.parties.durability import EXIT_STORAGE_LOST
from host.parties.issuer import IssuerServer
from host.parties.seller import Endpoint, SellerConfig, SellerServer
from host.parties.server import PartyServer, ServerConfig
from host.protocol.messages import ErrorMessage, OrderOutcome
from host.protocol.wire import MessageType, frame
from host.storage.ledger import Ledger
from host.storage.order_book import OrderBook
from host.storage.shipments import Shipments
from host.storage.sqlite import Database, StorageFull, StorageLost
from terminal.session import CardSession
from tests.host.market import DELIVERY, ISSUER, SELLER, Market, form, order
from tests.host.stores import decided
from tests.host.test_transaction import balance, client_for, shipments

FULL = "database or disk is full"
IOERR = "disk I/O error"


class FaultyConnection:
    """A sqlite3 connection whose COMMIT fails, while `armed`, for transactions that ran a
    statement `matching`: the COMMIT is not executed, so the transaction is still open, as
    SQLite may leave it after a real failed COMMIT."""

    def __init__(self, conn: sqlite3.Connection, error: str,
                 matching: Callable[[str], bool] = lambda _sql: True) -> None:
        self.conn, self.error, self.matching = conn, error, matching
        self.armed = True
        self.failed = 0
        self._statements: list[str] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("BEGIN"):
            self._statements = []
        self._statements.append(sql)
        if sql == "COMMIT" and self.armed and any(map(self.matching, self._statements)):
            self.failed += 1
            raise sqlite3.OperationalError(self.error)
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def inject(store: Any, error: str, matching: Callable[[str], bool] = lambda _sql: True
           ) -> FaultyConnection:
    """Wrap the SQLite connection under `store` (a store, or its engine)."""
    db: Database = getattr(store, "db", store)
    faulty = FaultyConnection(db.conn, error, matching)
    db.conn = faulty  # type: ignore[assignment]
    return faulty


def ship(shipments: Shipments, order_id: bytes = bytes(16)) -> object:
    return decided(shipments.ship(order_id, b"request", SELLER, "A", "somewhere",
                                  f"T{order_id.hex()}", ["destination"]))


# -- the transaction helper ---------------------------------------------------------------------


@pytest.mark.parametrize("error", [FULL, IOERR, "database is locked"])
def test_a_failed_commit_is_rolled_back(tmp_path: Path, error: str) -> None:
    book = Shipments(tmp_path / "ship.sqlite")
    faulty = inject(book, error)
    with pytest.raises((StorageFull, StorageLost, sqlite3.OperationalError)):
        ship(book)
    assert faulty.failed == 1
    # rolled back: nothing pending on the connection, nothing recorded
    assert not faulty.conn.in_transaction
    assert faulty.conn.execute("SELECT count(*) FROM shipments").fetchone() == (0,)
    faulty.armed = False
    if error == IOERR:  # the database refuses to go on: the party must stop
        with pytest.raises(StorageLost):
            ship(book)
    else:  # the next decision starts clean and is a new one, not a retransmission
        tracking, seen, _answer = ship(book)  # type: ignore[misc]
        assert seen.value == "new" and tracking == f"T{bytes(16).hex()}"
    book.close()


def test_storage_errors_are_told_apart(tmp_path: Path) -> None:
    for cls in (Ledger, OrderBook, Shipments):
        store = cls(tmp_path / f"{cls.__name__}.sqlite")
        db = store.db
        assert isinstance(db, Database)
        inject(db, FULL)
        with pytest.raises(StorageFull) as full, db.transaction():
            db.conn.execute("SELECT 1")
        assert full.value.code == "internal"
        store.close()


def test_halting_stops_the_process_with_one_line(tmp_path: Path) -> None:
    """What a server process does on StorageLost: exit non-zero, one line saying why."""
    proc = subprocess.run(
        [sys.executable, "-c", "from host.parties.durability import halt_process; "
         "from host.storage.sqlite import StorageLost; "
         "halt_process('issuer')(StorageLost('fsync failed')); print('went on')"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_STORAGE_LOST
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == ["nettx issuer: stopping, storage failure: fsync failed"]


# -- the parties under a full disk -------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def pending_then_completed(market: Market, card: CardSession, faulty: FaultyConnection
                           ) -> None:
    client = client_for(market, card)
    outcome = client.buy(order())
    assert outcome.status == "pending", outcome
    assert faulty.failed >= 1
    # the party kept serving: the holder can ask, the seller keeps retrying
    time.sleep(0.5)
    assert client.status(client.last_sealed).status == "pending"  # type: ignore[arg-type]
    failed_so_far = faulty.failed
    assert failed_so_far >= 2  # retried while the disk stayed full
    faulty.armed = False  # space came back
    assert client.wait_for_outcome(client.last_sealed).status == "completed"  # type: ignore[arg-type]
    assert balance(market) == 100_000 - 4900
    assert shipments(market) == 1


def test_card_manager_with_a_full_disk(market: Market, holder_card: CardSession) -> None:
    issuer = market.servers["issuer"]
    assert isinstance(issuer, IssuerServer)
    faulty = inject(issuer.ledger, FULL)
    pending_then_completed(market, holder_card, faulty)


def test_seller_with_a_full_disk(market: Market, holder_card: CardSession) -> None:
    seller = market.servers["seller"]
    assert isinstance(seller, SellerServer)
    # the order is received; every later move of it fails until there is space
    faulty = inject(seller.orders, FULL, lambda sql: sql.startswith("UPDATE orders"))
    pending_then_completed(market, holder_card, faulty)


def test_seller_with_a_full_disk_refuses_new_orders_with_internal(
        market: Market, holder_card: CardSession) -> None:
    seller = market.servers["seller"]
    assert isinstance(seller, SellerServer)
    faulty = inject(seller.orders, FULL)
    with pytest.raises(TransactionError) as refused:
        client_for(market, holder_card).buy(order())
    assert refused.value.code == "internal"
    faulty.armed = False
    assert client_for(market, holder_card).buy(order()).status == "completed"


def test_delivery_with_a_full_disk(market: Market, holder_card: CardSession) -> None:
    delivery = market.servers["delivery"]
    assert isinstance(delivery, DeliveryServer)
    faulty = inject(delivery.shipments, FULL)
    pending_then_completed(market, holder_card, faulty)


# -- the parties after an I/O error: stop, recover on restart ---------------------------------


def restart(market: Market, role: str) -> PartyServer:
    """A new process's worth of party on the same database and port (the old one stopped)."""
    old = market.servers[role]
    config = ServerConfig(port=market.ports[role])

    async def again() -> PartyServer:
        await old.close()
        new: PartyServer
        if role == "issuer":
            new = IssuerServer(market.keys(ISSUER), config, market.home / "ledger.sqlite")
        elif role == "delivery":
            new = DeliveryServer(market.keys(DELIVERY), config, market.home / "ship.sqlite")
        else:
            new = SellerServer(market.keys(SELLER), config, SellerConfig(
                form(), Endpoint("127.0.0.1", market.ports["issuer"]),
                Endpoint("127.0.0.1", market.ports["delivery"]), market.home / "orders.sqlite",
                retry_every=0.2))
        await new.start()
        return new

    market.servers[role] = market.run(again())
    return market.servers[role]


def halting(server: PartyServer) -> list[StorageLost]:
    """Record the halts instead of ending the test process; the server stops listening,
    as the process would be gone."""
    halts: list[StorageLost] = []

    def halt(exc: StorageLost) -> None:
        halts.append(exc)
        assert server.server is not None
        server.server.close()

    server.halt = halt
    return halts


@pytest.mark.parametrize("role", ["issuer", "delivery", "seller"])
def test_an_io_error_stops_the_party_and_a_restart_recovers(
        market: Market, holder_card: CardSession, role: str) -> None:
    server = market.servers[role]
    db: Database = {"issuer": lambda: server.ledger, "delivery": lambda: server.shipments,
                    "seller": lambda: server.orders}[role]().db  # type: ignore[attr-defined]
    # the seller's fault hits the order's first move, after it was received
    faulty = inject(db, IOERR, (lambda sql: sql.startswith("UPDATE orders"))
                    if role == "seller" else (lambda _sql: True))
    halts = halting(server)
    client = client_for(market, holder_card)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        _form, sealed = client.prepare(conn, order())
        conn.send_raw(frame(MessageType.ORDER, envelope=sealed.envelope.to_cbor()))
        answer = conn.receive()
    # not a completion: pending, or `internal` from a seller that is stopping
    assert isinstance(answer, (OrderOutcome, ErrorMessage))
    if isinstance(answer, OrderOutcome):
        assert answer.status == "pending"
    else:
        assert answer.code == "internal"
    wait_for(lambda: len(halts) >= 1)
    assert "data may not be durable" in str(halts[0])
    # the stopped party writes nothing more, whatever it is asked
    faulty.armed = False
    with pytest.raises(StorageLost), db.transaction():
        pass
    restart(market, role)
    outcome = client.wait_for_outcome(sealed)
    assert outcome.status == "completed", outcome
    assert balance(market) == 100_000 - 4900
    assert shipments(market) == 1


def test_a_full_disk_is_not_a_reason_to_stop(market: Market, holder_card: CardSession) -> None:
    issuer = market.servers["issuer"]
    halts = halting(issuer)
    faulty = inject(issuer.ledger, FULL)  # type: ignore[attr-defined]
    assert client_for(market, holder_card).buy(order()).status == "pending"
    faulty.armed = False
    assert halts == []
