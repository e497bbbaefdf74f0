"""The card manager's rules as a pure function: every check, in its order, without a
database (host.parties.authorisation)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from card_applet.vocabulary import ATC_BLOCK
from host.parties.authorisation import (
    ATC_WINDOW,
    INVALID,
    MAX_AMOUNT,
    MAX_DECLINES,
    RATE_LIMITED,
    Limits,
    decide,
)
from host.storage.ledger import Account, AuthorisationRequest, CounterHistory, Decision, Facts

HOLDER = "holder:alice@example.org"
CARD = "4000123412341234"
DIGEST = bytes(range(32))

ACCOUNT = Account(card_number=CARD, holder=HOLDER, name="Alice", phone="+33 1 23 45 67 89",
                  expiry="12/29", balance=10_000)
REQUEST = AuthorisationRequest(
    order_id=bytes(16), request_digest=bytes(32), seller="seller:shop.example", holder=HOLDER,
    digest=DIGEST, atc=100, card_number=CARD, amount=4_900, expiry="12/29", name="Alice",
    phone="+33 1 23 45 67 89", fields=frozenset({"card_number", "amount"}))
FACTS = Facts(account=ACCOUNT, counters=CounterHistory(seen=False, highest=99), declines=0)


def declined(reason: str, amount: int = 4_900, card: str | None = CARD,
             evaluated: bool = True) -> Decision:
    return Decision("declined", reason, amount, DIGEST, card_number=card, evaluated=evaluated)


# (what differs from an honest request, the facts the ledger found, the decision)
CASES: list[tuple[str, dict[str, object], Facts, Decision]] = [
    ("honest", {}, FACTS, Decision("approved", "approved", 4_900, DIGEST, card_number=CARD)),
    ("no amount", {"amount": None}, FACTS, declined(INVALID, 0, None)),
    ("zero amount", {"amount": 0}, FACTS, declined(INVALID, 0, None)),
    ("negative amount", {"amount": -5}, FACTS, declined(INVALID, 0, None)),
    ("amount too large", {"amount": MAX_AMOUNT + 1}, FACTS, declined(INVALID, 0, None)),
    ("no card number", {"card_number": None}, FACTS, declined(INVALID, 0, None)),
    # the amount and card number are checked before the rate limit
    ("invalid while rate-limited", {"amount": None}, replace(FACTS, declines=MAX_DECLINES),
     declined(INVALID, 0, None)),
    ("rate-limited", {}, replace(FACTS, declines=MAX_DECLINES),
     declined(RATE_LIMITED, card=None, evaluated=False)),
    ("rate limit before the account", {"card_number": "4999"},
     replace(FACTS, account=None, declines=MAX_DECLINES + 3),
     declined(RATE_LIMITED, card=None, evaluated=False)),
    ("one decline short of the limit", {}, replace(FACTS, declines=MAX_DECLINES - 1),
     Decision("approved", "approved", 4_900, DIGEST, card_number=CARD)),
    ("unknown card", {}, replace(FACTS, account=None), declined("unknown card number")),
    ("another holder's card", {"holder": "holder:mallory@example.org"}, FACTS,
     declined("the card number does not belong to this card holder")),
    ("wrong expiry", {"expiry": "01/30"}, FACTS, declined("wrong expiry date")),
    ("no expiry", {"expiry": None}, FACTS, declined("wrong expiry date")),
    ("wrong name", {"name": "Alicia"}, FACTS, declined("the name does not match the account")),
    ("wrong phone", {"phone": "+33 9"}, FACTS,
     declined("the phone number does not match the account")),
    ("no phone on the account: any phone", {"phone": None},
     replace(FACTS, account=replace(ACCOUNT, phone="")),
     Decision("approved", "approved", 4_900, DIGEST, card_number=CARD)),
    ("blocked", {}, replace(FACTS, account=replace(ACCOUNT, blocked=True)),
     declined("the card is blocked")),
    ("counter seen", {}, replace(FACTS, counters=CounterHistory(seen=True, highest=100)),
     declined("card transaction counter 100 seen before: a cloned card")),
    ("counter far below", {}, replace(FACTS, counters=CounterHistory(False, 100 + ATC_WINDOW)),
     declined(f"card transaction counter 100 far below {100 + ATC_WINDOW}: a cloned card")),
    ("counter just inside the window", {},
     replace(FACTS, counters=CounterHistory(False, 100 + ATC_WINDOW - 1)),
     Decision("approved", "approved", 4_900, DIGEST, card_number=CARD)),
    ("first counter of a holder", {}, replace(FACTS, counters=CounterHistory(False, None)),
     Decision("approved", "approved", 4_900, DIGEST, card_number=CARD)),
    ("insufficient funds", {"amount": 10_001}, FACTS,
     declined("insufficient funds", 10_001)),
    ("exactly the balance", {"amount": 10_000}, FACTS,
     Decision("approved", "approved", 10_000, DIGEST, card_number=CARD)),
    # the first failing check names the decline: the holder before the expiry, the block
    # before the counter, the counter before the funds
    ("holder before expiry", {"holder": "holder:mallory@example.org", "expiry": None}, FACTS,
     declined("the card number does not belong to this card holder")),
    ("blocked before counter", {},
     replace(FACTS, account=replace(ACCOUNT, blocked=True),
             counters=CounterHistory(True, 100)), declined("the card is blocked")),
    ("counter before funds", {"amount": 20_000},
     replace(FACTS, counters=CounterHistory(True, 100)),
     declined("card transaction counter 100 seen before: a cloned card", 20_000)),
]


@pytest.mark.parametrize(("changes", "facts", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_the_card_managers_rules(changes: dict[str, object], facts: Facts,
                                 expected: Decision) -> None:
    assert decide(replace(REQUEST, **changes), facts) == expected  # type: ignore[arg-type]


def test_the_limits_are_parameters() -> None:
    strict = Limits(max_declines=1, atc_window=2, max_amount=1_000)
    assert decide(replace(REQUEST, amount=1_001), FACTS, strict).reason == INVALID
    small = replace(REQUEST, amount=1_000)
    assert decide(small, FACTS, strict).approved
    assert decide(small, replace(FACTS, declines=1), strict).reason == RATE_LIMITED
    assert decide(small, replace(FACTS, counters=CounterHistory(False, 102)),
                  strict).reason == "card transaction counter 100 far below 102: a cloned card"


def counters_decision(atc: int, seen: set[int]) -> Decision:
    """The rules on a request with counter `atc`, from a holder whose counters `seen` are
    on the ledger (as host.storage.ledger gathers them)."""
    facts = replace(FACTS, counters=CounterHistory(atc in seen, max(seen, default=None)))
    return decide(replace(REQUEST, atc=atc), facts)


def test_a_card_restarting_between_orders_is_approved_and_a_repeat_is_not() -> None:
    """The card reserves its counter in blocks and skips the rest of a block when it
    restarts: one restart per order, 3 boxes sealed per order, the card manager's part the
    second. Every jump is approved; a counter seen before is still a clone."""
    seen: set[int] = set()
    for restart in range(20):
        atc = restart * ATC_BLOCK + 2  # the reservation is restart * BLOCK, boxes +1, +2, +3
        assert counters_decision(atc, seen).approved, (restart, atc)
        seen.add(atc)
    for old in (2, ATC_BLOCK + 2, max(seen)):
        assert counters_decision(old, seen).reason == \
            f"card transaction counter {old} seen before: a cloned card"


@pytest.mark.parametrize(("restarts", "approved"), [(1, True), (7, True), (8, False)])
def test_an_order_overtaken_across_restarts(restarts: int, approved: bool) -> None:
    """Sealed, then overtaken by orders sealed across `restarts` restarts of the card, each a
    jump of up to a block: the window (8 blocks) lets up to 7 through. Two boxes in a row
    are never further apart than a block: the first value of a block, then a restart."""
    late = 1  # the first value of the first block
    seen = {late + restarts * ATC_BLOCK}  # each restart: up to one block further
    assert ATC_WINDOW == 8 * ATC_BLOCK
    assert counters_decision(late, seen).approved is approved


# Each rule, in the order the card manager checks it, as a way to break it alone. Breaking any
# two must give the earlier one's reason: the order of the checks is part of the rules (the rate
# limit must come before anything about the account is read).
Breaker = tuple[dict[str, object], dict[str, object], str]
IN_ORDER: list[Breaker] = [
    ({"card_number": None}, {}, INVALID),
    ({}, {"declines": MAX_DECLINES}, RATE_LIMITED),
    ({}, {"account": None}, "unknown card number"),
    ({"holder": "holder:mallory@example.org"}, {},
     "the card number does not belong to this card holder"),
    ({"expiry": "01/30"}, {}, "wrong expiry date"),
    ({"name": "Alicia"}, {}, "the name does not match the account"),
    ({"phone": "+33 9"}, {}, "the phone number does not match the account"),
    ({}, {"blocked": True}, "the card is blocked"),
    ({}, {"counters": CounterHistory(seen=True, highest=100)},
     "card transaction counter 100 seen before: a cloned card"),
    ({}, {"counters": CounterHistory(seen=False, highest=100 + ATC_WINDOW)},
     f"card transaction counter 100 far below {100 + ATC_WINDOW}: a cloned card"),
    ({"amount": 10_001}, {}, "insufficient funds"),
]


def broken(*breakers: Breaker) -> tuple[AuthorisationRequest, Facts]:
    request, facts, account = REQUEST, FACTS, ACCOUNT
    for changes, fact_changes, _ in breakers:
        request = replace(request, **changes)  # type: ignore[arg-type]
        for name, value in fact_changes.items():
            if name == "blocked":
                account = replace(account, blocked=True)
            elif name == "counters":  # both counter rules broken: a history that breaks both
                assert isinstance(value, CounterHistory)
                old = facts.counters
                highest = max(h for h in (old.highest, value.highest) if h is not None)
                facts = replace(facts, counters=CounterHistory(old.seen or value.seen, highest))
            else:
                facts = replace(facts, **{name: value})  # type: ignore[arg-type]
    if facts.account is not None:
        facts = replace(facts, account=account)
    return request, facts


@pytest.mark.parametrize("rule", IN_ORDER, ids=[rule[2][:40] for rule in IN_ORDER])
def test_each_rule_broken_alone_declines_with_its_reason(rule: Breaker) -> None:
    decision = decide(*broken(rule))
    assert (decision.code, decision.reason) == ("declined", rule[2])


PAIRS = [(a, b) for a in range(len(IN_ORDER)) for b in range(a + 1, len(IN_ORDER))]


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_the_first_failing_check_names_the_decline(first: int, second: int) -> None:
    decision = decide(*broken(IN_ORDER[first], IN_ORDER[second]))
    assert (decision.code, decision.reason) == ("declined", IN_ORDER[first][2])
