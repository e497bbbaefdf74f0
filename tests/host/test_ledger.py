"""The ledger applies the card manager's rules: it gathers the facts they read and applies the
decision they return in one transaction, whatever the rules are (a stand-in for them here).
Every test runs on both engines (`store_engine`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from host.errors import TransactionError
from host.storage.base import Seen
from host.storage.ledger import Account, AuthorisationRequest, Decision, Facts, Ledger
from tests.host.stores import count, decided, idle, query

HOLDER = "holder:alice@example.org"
CARD = "4000123412341234"
ACCOUNT = Account(CARD, HOLDER, "Alice", "", "12/29", 10_000)
REQUEST = AuthorisationRequest(
    order_id=bytes(16), request_digest=b"r" * 32, seller="seller:shop.example", holder=HOLDER,
    digest=b"d" * 32, atc=7, card_number=CARD, amount=4_900, expiry="12/29", name="Alice",
    phone=None, fields=frozenset({"card_number", "amount"}))


@pytest.fixture
def ledger(store_engine: Callable[[str], Path | str]) -> Iterator[Ledger]:
    ledger = Ledger(store_engine("ledger"))
    ledger.add_account(ACCOUNT)
    yield ledger
    ledger.close()


class Rules:
    """Returns a fixed decision and keeps the facts it was shown."""

    def __init__(self, decision: Decision) -> None:
        self.decision, self.seen = decision, list[Facts]()

    def __call__(self, request: AuthorisationRequest, facts: Facts) -> Decision:
        self.seen.append(facts)
        return self.decision


APPROVE = Decision("approved", "approved", 4_900, b"d" * 32, card_number=CARD)
DECLINE = Decision("declined", "wrong expiry date", 4_900, b"d" * 32, card_number=CARD)


def order(n: int, **changes: object) -> AuthorisationRequest:
    return replace(REQUEST, order_id=bytes([n]) * 16, **changes)  # type: ignore[arg-type]


def rows(ledger: Ledger, table: str) -> int:
    return count(ledger, table)


def test_the_rules_see_the_facts_the_ledger_holds(ledger: Ledger) -> None:
    rules = Rules(DECLINE)
    decided(ledger.authorise(order(1), rules))
    decided(ledger.authorise(order(2, atc=9), rules))
    decided(ledger.authorise(order(3, card_number="4999"), rules))
    decided(ledger.authorise(order(4, card_number=None), rules))
    first, second, third, fourth = rules.seen
    assert first.account == ACCOUNT and first.declines == 0
    assert (first.counters.seen, first.counters.highest) == (False, None)
    assert second.declines == 1 and (second.counters.seen, second.counters.highest) == (False, 7)
    # ATC 7 again (order 1's): seen, whatever the card number
    assert third.account is None and third.declines == 2
    assert (third.counters.seen, third.counters.highest) == (True, 9)
    assert fourth.account is None and fourth.declines == 3
    decided(ledger.authorise(order(5, atc=10), rules))
    assert (rules.seen[-1].counters.seen, rules.seen[-1].counters.highest) == (False, 9)


def test_an_approval_debits_once_and_a_retransmission_is_not_decided_again(
        ledger: Ledger) -> None:
    decision, seen = decided(ledger.authorise(order(1), Rules(APPROVE)))
    assert decision == APPROVE and seen is Seen.NEW
    assert ledger.account(CARD) == replace(ACCOUNT, balance=10_000 - 4_900)
    again = Rules(DECLINE)
    decision, seen = decided(ledger.authorise(order(1), again))
    assert seen is Seen.RETRANSMISSION and decision.approved and again.seen == []
    assert ledger.debits(order(1).order_id) == 1
    assert ledger.account(CARD) == replace(ACCOUNT, balance=10_000 - 4_900)


def test_only_an_evaluated_decline_counts(ledger: Ledger) -> None:
    decided(ledger.authorise(order(1), Rules(DECLINE)))
    assert ledger.declines(HOLDER) == 1
    decided(ledger.authorise(order(2), Rules(replace(DECLINE, card_number=None, evaluated=False))))
    assert ledger.declines(HOLDER) == 1
    assert ledger.account(CARD) == ACCOUNT
    recorded = query(ledger, "SELECT order_id, card_number FROM authorisations "
                             "ORDER BY order_id")
    assert recorded == [(order(1).order_id, CARD), (order(2).order_id, None)]


def test_a_stale_new_request_is_not_decided(ledger: Ledger) -> None:
    rules = Rules(APPROVE)
    with pytest.raises(TransactionError, match="stale"):
        decided(ledger.authorise(order(1), rules, stale="too old"))
    assert rules.seen == [] and rows(ledger, "authorisations") == 0


@pytest.mark.parametrize("rules", [
    Rules(replace(APPROVE, card_number=None)),  # an approval that names no account
    lambda request, facts: 1 / 0])
def test_rules_that_fail_leave_nothing_written(ledger: Ledger, rules: object) -> None:
    with pytest.raises((ValueError, ZeroDivisionError)):
        decided(ledger.authorise(order(1), rules))  # type: ignore[arg-type]
    for table in ("authorisations", "counters", "declines", "views"):
        assert rows(ledger, table) == 0, table
    assert ledger.account(CARD) == ACCOUNT and idle(ledger)
