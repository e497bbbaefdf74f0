"""The seller's order lifecycle: the transition table, the pending loop against a stale
snapshot, and every recorded decision answered byte for byte on a retransmission."""

from __future__ import annotations

import socket
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from host.parties.holder import HolderClient
from host.parties.seller import SellerServer
from host.parties.server import request_digest
from host.parties.session import Session
from host.protocol import codec, envelope
from host.protocol.envelope import Envelope, context
from host.protocol.order import Party
from host.protocol.wire import LENGTH, MessageType, frame
from host.storage.order_book import (
    TRANSITIONS,
    UNFINISHED,
    IllegalTransition,
    OrderBook,
    OrderRecord,
    OrderStatus,
)
from host.storage.sqlite import Database
from terminal.session import CardSession
from tests.host.market import Market, order
from tests.host.stores import decided, execute, idle, query
from tests.host.test_transaction import balance, client_for, shipments

S = OrderStatus
FINAL = (S.COMPLETED, S.DECLINED, S.FAILED)

# -- the transition table -----------------------------------------------------------------------


def book_at(location: Path | str, status: OrderStatus) -> tuple[OrderBook, bytes]:
    """A book holding one order, put at `status` by writing the row directly."""
    book = OrderBook(location)
    order_id = bytes(16)
    decided(book.receive(order_id, b"envelope", "holder:a@example.org", 100, bytes(32), ["amount"]))
    execute(book, "UPDATE orders SET status = ? WHERE order_id = ?", (status.value, order_id))
    return book, order_id


def move_args(new: OrderStatus) -> dict[str, object]:
    if new.final:
        return {"outcome": b"\xa0", "answer": b"frame"}
    if new is S.APPROVED:
        return {"approval": (b"mac", b"receipt")}
    return {}


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
def test_the_order_book_enforces_the_transition_table(
        store_engine: Callable[[str], Path | str], old: OrderStatus, new: OrderStatus) -> None:
    book, order_id = book_at(store_engine("orders"), old)
    try:
        if new in TRANSITIONS[old]:
            decided(book.move(order_id, new, **move_args(new)))  # type: ignore[arg-type]
            record = book.get(order_id)
            assert record is not None and record.status is new
        else:
            before = query(book, "SELECT * FROM orders")
            with pytest.raises(IllegalTransition):
                decided(book.move(order_id, new, **move_args(new)))  # type: ignore[arg-type]
            assert query(book, "SELECT * FROM orders") == before
            assert idle(book)
    finally:
        book.close()


def test_the_table_has_no_way_out_of_a_final_status_or_back_to_the_start() -> None:
    assert set(TRANSITIONS) == set(S)
    for final in FINAL:
        assert TRANSITIONS[final] == frozenset()
    assert all(S.RECEIVED not in targets for targets in TRANSITIONS.values())
    # once a debit may exist (authorising), failing goes through voiding, never directly
    for status in (S.AUTHORISING, S.APPROVED):
        assert S.FAILED not in TRANSITIONS[status]
    # every non-final status can still end
    for status in set(S) - set(FINAL):
        assert TRANSITIONS[status]


def test_a_final_move_records_its_outcome_and_only_it(
        store_engine: Callable[[str], Path | str]) -> None:
    book, order_id = book_at(store_engine("orders"), S.APPROVED)
    try:
        with pytest.raises(ValueError, match="outcome"):
            decided(book.move(order_id, S.COMPLETED))
        with pytest.raises(ValueError, match="outcome"):
            decided(book.move(order_id, S.VOIDING, outcome=b"\xa0", answer=b"x"))
        with pytest.raises(IllegalTransition):
            decided(book.move(bytes(range(16)), S.VOIDING))  # an order the book never received
    finally:
        book.close()


# -- the pending loop against a stale snapshot (issue: completed orders voided) ----------------


def completed_order(market: Market, card: CardSession) -> tuple[HolderClient, bytes]:
    client = client_for(market, card)
    outcome = client.buy(order())
    assert outcome.status == "completed"
    return client, outcome.order_id


def seller_of(market: Market) -> SellerServer:
    seller = market.servers["seller"]
    assert isinstance(seller, SellerServer)
    return seller


def stale_snapshot(seller: SellerServer, order_id: bytes, status: OrderStatus,
                   since: int | None = None) -> OrderRecord:
    """What `orders.unfinished()` returned before the normal path finished the order."""
    record = seller.orders.get(order_id)
    assert record is not None
    return replace(record, status=status, since=record.since if since is None else since,
                   note=None, outcome=None, answer=None)


def raw_request(port: int, message: bytes) -> bytes:
    """Send one frame, return the answer frame's exact bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(message)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk, "the party closed the connection"
            data += chunk
        return data


def party_request(market: Market, role: str, message: bytes) -> bytes:
    """Send one frame to the card manager or the delivery company in a session of the
    seller's, as the seller does; return the exact bytes of the answer frame it carries."""
    seller = seller_of(market)
    peer = seller.form.issuer if role == "issuer" else seller.form.delivery

    async def exchange() -> bytes:
        session = await Session.open(seller.keys, "127.0.0.1", market.ports[role], peer, role,
                                     30)
        try:
            await session.conn.send_raw(session.channel.seal(message))
            data = await session.conn.receive_frame()
            assert data is not None, "the party closed the connection"
            body = session.channel.open(data)
            return LENGTH.pack(len(body)) + body
        finally:
            await session.close()

    return market.run(exchange())


def status_bytes(market: Market, order_id: bytes) -> bytes:
    return raw_request(market.ports["seller"], frame(MessageType.STATUS, order=order_id))


@pytest.mark.parametrize("seen", [S.RECEIVED, S.AUTHORISING, S.APPROVED])
def test_the_pending_loop_leaves_an_order_completed_after_its_snapshot_alone(
        market: Market, holder_card: CardSession, seen: OrderStatus) -> None:
    """The race, made deterministic: the pending loop took its snapshot while the order was
    `seen`; the normal path completed it; then the loop resumes it from the stale status."""
    _client, order_id = completed_order(market, holder_card)
    seller = seller_of(market)
    paid, told = balance(market), status_bytes(market, order_id)
    market.run(seller._resume(stale_snapshot(seller, order_id, seen)))
    record = seller.orders.get(order_id)
    assert record is not None and record.status is S.COMPLETED
    assert balance(market) == paid == 100_000 - 4900  # no credit back
    assert shipments(market) == 1
    ledger = sqlite3.connect(market.home / "ledger.sqlite")
    try:
        assert ledger.execute("SELECT code FROM authorisations").fetchall() == [("approved",)]
    finally:
        ledger.close()
    assert status_bytes(market, order_id) == told


@pytest.mark.parametrize("seen", [S.RECEIVED, S.AUTHORISING, S.APPROVED])
def test_an_overdue_snapshot_does_not_fail_a_completed_order(
        make_market: Callable[..., Market], holder_card: CardSession,
        seen: OrderStatus) -> None:
    market = make_market()
    _client, order_id = completed_order(market, holder_card)
    seller = seller_of(market)
    told = status_bytes(market, order_id)
    market.run(seller._resume(stale_snapshot(seller, order_id, seen, since=0)))  # overdue
    record = seller.orders.get(order_id)
    assert record is not None and record.status is S.COMPLETED
    assert balance(market) == 100_000 - 4900
    assert status_bytes(market, order_id) == told


# -- retransmissions get the recorded bytes -----------------------------------------------------


def recorded_envelope(market: Market, order_id: bytes) -> Envelope:
    record = seller_of(market).orders.get(order_id)
    assert record is not None
    return Envelope.from_cbor(codec.decode(record.envelope))


def authorise_frame(market: Market, env: Envelope) -> bytes:
    """The seller's authorisation request, built afresh (its MAC differs each time; the
    request digest, which tells a retransmission, does not)."""
    seller = seller_of(market)
    header = envelope.Header.from_bytes(env.header)
    part = env.parts[Party.ISSUER]
    mac = market.run(seller.keys.mac(header.issuer, request_digest(env.header, part),
                                     context("authorise", header.order_id)))
    return frame(MessageType.AUTHORISE, header=env.header, part=part, mac=mac)


def deliver_frame(market: Market, env: Envelope, approval: bytes) -> bytes:
    seller = seller_of(market)
    header = envelope.Header.from_bytes(env.header)
    part = env.parts[Party.DELIVERY]
    mac = market.run(seller.keys.mac(header.delivery, request_digest(env.header, part, approval),
                                     context("delivery-request", header.order_id)))
    return frame(MessageType.DELIVER, header=env.header, part=part, approval=approval, mac=mac)


def test_a_retransmitted_authorisation_gets_byte_identical_bytes(
        market: Market, holder_card: CardSession) -> None:
    _client, order_id = completed_order(market, holder_card)
    env = recorded_envelope(market, order_id)
    first = party_request(market, "issuer", authorise_frame(market, env))
    second = party_request(market, "issuer", authorise_frame(market, env))
    assert first == second
    # and they are the bytes the seller verified and recorded: the same authorisation MAC
    approval, _receipt = seller_of(market).orders.approval(order_id)
    assert approval in first
    assert balance(market) == 100_000 - 4900  # one debit


def test_a_retransmitted_delivery_request_gets_byte_identical_bytes(
        market: Market, holder_card: CardSession) -> None:
    _client, order_id = completed_order(market, holder_card)
    env = recorded_envelope(market, order_id)
    approval, _receipt = seller_of(market).orders.approval(order_id)
    first = party_request(market, "delivery", deliver_frame(market, env, approval))
    second = party_request(market, "delivery", deliver_frame(market, env, approval))
    assert first == second
    assert shipments(market) == 1


def test_a_retransmitted_reversal_gets_byte_identical_bytes(
        market: Market, holder_card: CardSession) -> None:
    _client, order_id = completed_order(market, holder_card)
    env = recorded_envelope(market, order_id)
    seller = seller_of(market)
    record = seller.orders.get(order_id)
    assert record is not None
    header = envelope.Header.from_bytes(env.header)

    def reverse_frame() -> bytes:
        mac = market.run(seller.keys.mac(
            header.issuer, envelope.reverse_body(order_id, record.digest, "test"),
            context("reverse", order_id)))
        return frame(MessageType.REVERSE, header=env.header, digest=record.digest,
                     reason="test", mac=mac)

    first = party_request(market, "issuer", reverse_frame())
    second = party_request(market, "issuer", reverse_frame())
    assert first == second
    assert balance(market) == 100_000  # credited back once, not twice


def test_the_holder_gets_the_recorded_outcome_frame(market: Market,
                                                    holder_card: CardSession) -> None:
    _client, order_id = completed_order(market, holder_card)
    record = seller_of(market).orders.get(order_id)
    assert record is not None and record.answer is not None
    assert status_bytes(market, order_id) == record.answer == status_bytes(market, order_id)


def test_an_order_book_from_before_recorded_answers_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (order_id BLOB PRIMARY KEY, envelope BLOB NOT NULL, "
                 "holder TEXT NOT NULL, amount INTEGER NOT NULL, digest BLOB NOT NULL, "
                 "status TEXT NOT NULL, note TEXT, approval BLOB, receipt BLOB, outcome BLOB, "
                 "since INTEGER NOT NULL, at INTEGER NOT NULL)")
    conn.commit()
    conn.close()
    book = OrderBook(path)
    try:
        decided(book.receive(bytes(16), b"e", "holder:a@example.org", 1, bytes(32), []))
        decided(book.move(bytes(16), S.FAILED, outcome=b"\xa0", answer=b"frame"))
        record = book.get(bytes(16))
        assert record is not None and record.answer == b"frame"
    finally:
        book.close()


def test_the_unfinished_orders_are_found_without_reading_every_order(tmp_path: Path) -> None:
    """The seller looks them up every few seconds, for as long as it runs: through an index
    of them alone, not a scan of every order it ever took."""
    book = OrderBook(tmp_path / "orders.sqlite")
    try:
        db = book.db
        assert isinstance(db, Database)
        plan = db.reader.execute(f"EXPLAIN QUERY PLAN SELECT order_id FROM orders "
                                 f"WHERE {UNFINISHED}").fetchall()
        assert "USING INDEX orders_unfinished" in " ".join(row[-1] for row in plan), plan
        for n, final in enumerate([False, True, False]):
            order_id = bytes([n]) * 16
            decided(book.receive(order_id, b"e", "holder:a@example.org", 1, bytes(32), []))
            if final:
                decided(book.move(order_id, S.FAILED, outcome=b"o", answer=b"a"))
        assert sorted(o.order_id for o in book.unfinished()) == [bytes(16), bytes([2]) * 16]
    finally:
        book.close()
