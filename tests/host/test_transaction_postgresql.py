"""The transaction tests whose parties keep their stores through the storage layer, run again
with the card manager, the seller and the delivery company on PostgreSQL (one database per
store, on the tests' private server): the same outcomes, debits and shipments as on SQLite."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from host.parties.seller import Endpoint, SellerConfig, SellerServer
from host.parties.server import ServerConfig
from host.protocol.wire import MessageType, frame
from host.storage import postgresql
from terminal.session import CardSession
from tests.host.market import SELLER, Market, form, order
from tests.host.test_order_lifecycle import raw_request
from tests.host.test_transaction import (  # noqa: F401 - the tests, collected again here
    balance,
    client_for,
    shipments,
    test_a_refusal_after_the_debit_is_reversed,
    test_a_retransmission_after_the_window_gets_the_recorded_decision,
    test_cloned_card_counter_is_declined,
    test_counters_arriving_out_of_order_are_not_a_clone,
    test_declines,
    test_forged_delivery_part_after_the_debit_is_reversed,
    test_purchase_completes_and_debits_once,
    test_replayed_envelope_is_refused,
    test_stale_timestamp_is_refused,
    test_two_orders_in_a_row,
)
from tests.pg import PostgresServer


@pytest.fixture
def party_engine(postgres: PostgresServer) -> Callable[[str], Path | str]:
    made: dict[str, str] = {}

    def location(name: str) -> str:
        if name not in made:
            made[name] = postgres.create_database()
        return made[name]

    return location


def test_the_parties_here_keep_their_stores_on_postgresql(market: Market) -> None:
    stores = {"issuer": "ledger", "seller": "orders", "delivery": "shipments"}
    for role, store in stores.items():
        assert isinstance(getattr(market.servers[role], store).db, postgresql.Database), role


def test_a_second_seller_instance_answers_from_the_shared_order_book(
        market: Market, holder_card: CardSession) -> None:
    """The holder asks about its order at another instance of the seller than the one that
    drove it: the same recorded frame, byte for byte; and the second instance, resuming
    unfinished orders from the same book, leaves the finished one alone."""
    outcome = client_for(market, holder_card).buy(order())
    assert outcome.status == "completed", outcome.reason
    second = SellerServer(market.keys(SELLER), ServerConfig(), SellerConfig(
        form(), Endpoint("127.0.0.1", market.ports["issuer"]),
        Endpoint("127.0.0.1", market.ports["delivery"]), market.location("orders"),
        retry_every=0.2))
    port = market.run(second.start())
    try:
        ask = frame(MessageType.STATUS, order=outcome.order_id)
        assert raw_request(port, ask) == raw_request(market.ports["seller"], ask)
        time.sleep(0.5)  # a few rounds of the second instance's pending loop
        assert balance(market) == 100_000 - 4900 and shipments(market) == 1
    finally:
        market.run(second.close())
