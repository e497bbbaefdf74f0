"""One driver per order across seller instances sharing an order book: the claim is the
database's (on both engines), expires when its holder stops renewing it, and fences a holder
that was taken over. And the order book's schema upgrade that brought the claim."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from host.storage.order_book import ORDERS, IllegalTransition, OrderBook, OrderStatus
from host.storage.postgresql import Database
from tests.host.stores import decided

S = OrderStatus
ORDER = bytes(16)
LEASE = 2.0  # long enough that a loaded machine does not expire it between two lines


@pytest.fixture
def books(store_engine: Callable[[str], Path | str]) -> Iterator[tuple[OrderBook, OrderBook]]:
    """Two instances of the seller on one order book, holding one received order."""
    location = store_engine("orders")
    first, second = OrderBook(location, lease=LEASE), OrderBook(location, lease=LEASE)
    decided(first.receive(ORDER, b"envelope", "holder:a@example.org", 100, bytes(32), ["amount"]))
    yield first, second
    first.close()
    second.close()


def test_one_instance_drives_an_order_at_a_time(books: tuple[OrderBook, OrderBook]) -> None:
    first, second = books
    assert decided(first.claim(ORDER))
    assert not decided(second.claim(ORDER))
    assert decided(first.claim(ORDER))  # its own claim, renewed
    decided(first.release(ORDER))
    assert decided(second.claim(ORDER)) and not decided(first.claim(ORDER))
    assert not decided(first.claim(bytes(range(16))))  # no such order


def test_a_claim_left_by_a_dead_instance_expires(books: tuple[OrderBook, OrderBook]) -> None:
    first, second = books
    assert decided(first.claim(ORDER))
    decided(first.move(ORDER, S.AUTHORISING))  # renews the lease
    assert not decided(second.claim(ORDER))
    time.sleep(LEASE + 0.3)  # first stops renewing: killed, or stuck
    assert decided(second.claim(ORDER))
    # the late driver is fenced off: it cannot overwrite what the new one records
    with pytest.raises(IllegalTransition):
        decided(first.move(ORDER, S.VOIDING, note="late"))
    decided(second.move(ORDER, S.APPROVED, approval=(b"mac", b"receipt")))
    record = second.get(ORDER)
    assert record is not None and record.status is S.APPROVED and record.note is None


def test_a_new_order_is_claimed_as_recorded_and_released_by_its_final_move(
        store_engine: Callable[[str], Path | str]) -> None:
    """The seller claims a new order in the decision that records it, and the move that
    makes it final gives the claim up: two decisions fewer per order, the same exclusion."""
    location = store_engine("orders")
    first, second = OrderBook(location, lease=LEASE), OrderBook(location, lease=LEASE)
    try:
        decided(first.receive(ORDER, b"envelope", "holder:a@example.org", 100, bytes(32),
                              ["amount"], claim=True))
        assert not decided(second.claim(ORDER))  # first's from its record on
        decided(first.move(ORDER, S.AUTHORISING))
        assert not decided(second.claim(ORDER))
        decided(first.move(ORDER, S.DECLINED, outcome=b"outcome", answer=b"frame"))
        assert decided(second.claim(ORDER))  # released with the final move
    finally:
        first.close()
        second.close()


def test_a_final_move_releases_its_own_claim_only(books: tuple[OrderBook, OrderBook]) -> None:
    first, second = books
    decided(first.move(ORDER, S.AUTHORISING))  # nobody's claim
    assert decided(second.claim(ORDER))
    with pytest.raises(IllegalTransition):  # second's claim holds: first cannot finish it
        decided(first.move(ORDER, S.DECLINED, outcome=b"outcome", answer=b"frame"))
    assert not decided(first.claim(ORDER))  # and its refused move released nothing
    decided(second.move(ORDER, S.DECLINED, outcome=b"outcome", answer=b"frame"))
    assert decided(first.claim(ORDER))


def test_a_move_without_a_claim_is_not_refused(books: tuple[OrderBook, OrderBook]) -> None:
    first, _second = books
    decided(first.move(ORDER, S.AUTHORISING))  # nobody claimed it: a single seller as before


def test_the_claim_came_as_a_second_schema_version(pg_url: str) -> None:
    """A database an older nettx made (version 1, no claim columns) is upgraded on start."""
    older = dataclasses.replace(ORDERS, postgresql=ORDERS.postgresql[:1])
    db = Database(pg_url, older)
    assert db.version == 1
    db.run(lambda tx: tx.execute(
        "INSERT INTO orders (order_id, envelope, holder, amount, digest, status, since, at) "
        "VALUES (?, ?, 'holder:a@example.org', 1, ?, 'received', 0, 0)",
        (ORDER, b"e", bytes(32))))
    db.close()
    book = OrderBook(pg_url)
    try:
        assert isinstance(book.db, Database) and book.db.version == len(ORDERS.postgresql) == 3
        assert decided(book.claim(ORDER))
        assert [r.order_id for r in book.unfinished()] == [ORDER]
    finally:
        book.close()
