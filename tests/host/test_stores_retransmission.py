"""Retransmission and replay at the stores, on both engines (`store_engine`): a peer's retry
gets the recorded decision and the very frame sent for it; anything else under a known order
id is refused; a reversal credits once; and nothing a refusal touched was written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from host.errors import TransactionError
from host.storage.base import Seen
from host.storage.ledger import Ledger
from host.storage.order_book import OrderBook
from host.storage.shipments import Shipments
from tests.host.stores import count, decided
from tests.host.test_ledger import ACCOUNT, APPROVE, CARD, DECLINE, Rules, order

Location = Callable[[str], Path | str]
SELLER = "seller:shop.example"
ORDER = bytes(range(16))


def ship(store: Shipments, digest: bytes = b"r" * 32, stale: str | None = None,
         tracking: str = "T-1") -> tuple[str, Seen, bytes | None]:
    return decided(store.ship(ORDER, digest, SELLER, "Alice", "5 avenue Foch", tracking,
                              ["destination"], stale))


def test_a_shipment_is_made_once_and_answered_with_its_first_frame(
        store_engine: Location) -> None:
    store = Shipments(store_engine("shipments"))
    try:
        with pytest.raises(TransactionError, match="stale"):
            ship(store, stale="too old")
        assert count(store, "shipments") == 0
        assert ship(store) == ("T-1", Seen.NEW, None)
        assert ship(store, tracking="T-2") == ("T-1", Seen.RETRANSMISSION, None)
        assert decided(store.record_answer(ORDER, b"first")) == b"first"
        assert decided(store.record_answer(ORDER, b"second")) == b"first"  # a concurrent retry lost
        # a retransmission is answered at any age, with the frame sent
        assert ship(store, stale="too old") == ("T-1", Seen.RETRANSMISSION, b"first")
        with pytest.raises(TransactionError, match="replay"):
            ship(store, digest=b"x" * 32)
        assert count(store, "shipments") == 1 and count(store, "views") == 1
    finally:
        store.close()


def test_a_decision_keeps_the_frame_sent_for_it(store_engine: Location) -> None:
    ledger = Ledger(store_engine("ledger"))
    try:
        ledger.add_account(ACCOUNT)
        decided(ledger.authorise(order(1), Rules(APPROVE)))
        assert decided(ledger.record_answer(order(1).order_id, b"auth")) == b"auth"
        assert decided(ledger.record_answer(order(1).order_id, b"other")) == b"auth"
        decision, seen = decided(ledger.authorise(order(1), Rules(DECLINE), stale="late"))
        assert seen is Seen.RETRANSMISSION and decision.answer == b"auth"
        with pytest.raises(TransactionError, match="replay"):
            decided(ledger.authorise(replace(order(1), request_digest=b"x" * 32), Rules(APPROVE)))
    finally:
        ledger.close()


def test_a_reversal_credits_once(store_engine: Location) -> None:
    ledger = Ledger(store_engine("ledger"))
    try:
        ledger.add_account(ACCOUNT)
        decided(ledger.authorise(order(1), Rules(APPROVE)))
        digest = order(1).digest
        with pytest.raises(TransactionError, match="replay"):  # not this seller's order
            decided(ledger.reverse(order(1).order_id, "seller:other.example", digest))
        first = decided(ledger.reverse(order(1).order_id, SELLER, digest))
        assert (first.code, first.amount) == ("reversed", APPROVE.amount)
        assert ledger.account(CARD) == ACCOUNT and ledger.debits(order(1).order_id) == 0
        assert decided(ledger.record_reversal(order(1).order_id, b"rev")) == b"rev"
        again = decided(ledger.reverse(order(1).order_id, SELLER, digest))
        assert (again.code, again.answer) == ("reversed", b"rev")
        assert ledger.account(CARD) == ACCOUNT  # credited once
        # a declined order: nothing to credit
        decided(ledger.authorise(order(2), Rules(DECLINE)))
        assert decided(ledger.reverse(order(2).order_id, SELLER, digest)).code == "declined"
        assert ledger.account(CARD) == ACCOUNT
    finally:
        ledger.close()


def test_an_order_voided_before_its_request_is_never_decided(store_engine: Location) -> None:
    ledger = Ledger(store_engine("ledger"))
    try:
        ledger.add_account(ACCOUNT)
        voided = decided(ledger.reverse(order(3).order_id, SELLER, order(3).digest))
        assert (voided.code, voided.amount) == ("voided", 0)
        with pytest.raises(TransactionError, match="replay"):  # the late request
            decided(ledger.authorise(order(3), Rules(APPROVE)))
        assert ledger.account(CARD) == ACCOUNT
    finally:
        ledger.close()


def test_the_seller_records_an_order_id_once(store_engine: Location) -> None:
    book = OrderBook(store_engine("orders"))
    try:
        decided(book.receive(ORDER, b"envelope", "holder:a@example.org", 100, bytes(32),
                             ["amount"]))
        with pytest.raises(TransactionError, match="replay"):
            decided(book.receive(ORDER, b"other", "holder:a@example.org", 100, bytes(32),
                                 ["amount"]))
        record = book.get(ORDER)
        assert record is not None and record.envelope == b"envelope"
        assert count(book, "orders") == 1
    finally:
        book.close()
