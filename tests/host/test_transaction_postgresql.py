"""The transaction tests whose parties keep their stores through the storage layer, run again
with the card manager, the seller and the delivery company on PostgreSQL (one database per
store, on the tests' private server): the same outcomes, debits and shipments as on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from host.storage import postgresql
from tests.host.market import Market
from tests.host.test_transaction import (  # noqa: F401 - the tests, collected again here
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
