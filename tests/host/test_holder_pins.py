"""The holder pins whom it pays and how much, and the card manager's declines are no oracle
(docs/protocol.md, sections 3, 5 and 9). Each attack is mounted on loopback against the
in-process parties of tests/host/market.py."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from host.errors import EnvelopeError, OrderError, PolicyError, TransactionError
from host.parties.authorisation import MAX_DECLINES, RATE_LIMITED
from host.parties.connection import Connection
from host.parties.holder import HolderClient, Quote
from host.parties.issuer import DECLINED, IssuerServer
from host.parties.seller import Endpoint, SellerConfig, SellerServer
from host.parties.server import ServerConfig
from host.protocol import codec
from host.protocol.messages import Authorise, Form, FormRequest, expect
from host.protocol.money import Money
from host.protocol.order import CatalogueItem, Party
from host.protocol.wire import MessageType, frame
from host.storage.ledger import Ledger
from terminal.session import CardSession
from tests.host import test_transaction as transaction
from tests.host.market import (
    DELIVERY,
    EVIL_DELIVERY,
    ROGUE_SELLER,
    SELLER,
    Market,
    account,
    form,
    order,
)
from tests.host.market import holder_card as market_holder_card
from tests.host.onpath import OnPathProxy, edit_form
from tests.host.test_transaction import CEILING, PIN, balance, shipments

# the transaction tests' fixtures: the centre, Alice's card, the market
centre, holder_card = transaction.centre, transaction.holder_card
make_market, market = transaction.make_market, transaction.market

HONEST_TOTAL = 2500 + 2 * 1200  # order(): A-100 and two B-200


def holder(card: CardSession, port: int, **kwargs: Any) -> HolderClient:
    return HolderClient(card, PIN, "127.0.0.1", port, **{"seller": SELLER,
                                                         "max_amount": CEILING, **kwargs})


def orders_at(m: Market, name: str = "orders.sqlite") -> int:
    conn = sqlite3.connect(m.home / name)
    try:
        return int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])
    finally:
        conn.close()


def nothing_sealed_nor_charged(m: Market, card: CardSession, atc_before: int) -> None:
    assert card.info().atc == atc_before, "the card sealed something"
    assert balance(m) == account().balance
    assert shipments(m) == 0


# -- item 4: whom the holder pays ---------------------------------------------------------------


def start_rogue_seller(m: Market, price: int) -> int:
    """A genuine seller (its own `seller:` row) at another address, charging `price`."""
    rogue = SellerServer(m.keys(ROGUE_SELLER), ServerConfig(), SellerConfig(
        form(seller=ROGUE_SELLER, catalogue=(CatalogueItem("A-100", "smart card reader",
                                                           price),)),
        Endpoint("127.0.0.1", m.ports["issuer"]), Endpoint("127.0.0.1", m.ports["delivery"]),
        m.home / "rogue.sqlite"))
    port = m.run(rogue.start())
    m.servers["rogue"] = rogue
    return port


def test_a_rogue_seller_at_another_address_gets_nothing(market: Market,
                                                        holder_card: CardSession) -> None:
    port = start_rogue_seller(market, 30_000)
    atc = holder_card.info().atc
    with pytest.raises(PolicyError, match=f"is {ROGUE_SELLER}, not {SELLER}"):
        holder(holder_card, port).buy(order(lines=(("A-100", 1),)))
    nothing_sealed_nor_charged(market, holder_card, atc)
    assert orders_at(market, "rogue.sqlite") == 0


def test_a_rogue_seller_passing_as_the_honest_one_fails_the_form_mac(
        market: Market, holder_card: CardSession) -> None:
    """The rogue names the honest seller in its form; it cannot MAC it as that seller."""
    port = start_rogue_seller(market, 30_000)
    proxy = OnPathProxy(port, rewrite=lambda reply: edit_form(
        reply, lambda f: f.update(seller=SELLER)))
    try:
        atc = holder_card.info().atc
        with pytest.raises(EnvelopeError, match="forged"):
            holder(holder_card, proxy.port).buy(order(lines=(("A-100", 1),)))
    finally:
        proxy.close()
    nothing_sealed_nor_charged(market, holder_card, atc)
    assert "order" not in proxy.types()


def evil_delivery_answers(m: Market) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """The on-path attacker answers the holder's confirmation of the delivery company itself,
    with its own genuine `delivery:` row."""
    keys = m.keys(EVIL_DELIVERY)

    def answer(request: dict[str, Any]) -> dict[str, Any] | None:
        if request["type"] != "confirm" or request["party"] != "delivery":
            return None
        response = asyncio.run(keys.answer(request["peer"], request["challenge"]))
        return {"type": "confirmed", "response": response}

    return answer


def swap_delivery(f: dict[str, Any]) -> None:
    f["delivery"] = EVIL_DELIVERY


def cheaper(f: dict[str, Any]) -> None:
    f["catalogue"][0][2] = 1


def dearer(f: dict[str, Any]) -> None:
    f["catalogue"][0][2] += 100


@pytest.mark.parametrize("change", [swap_delivery, cheaper, dearer])
def test_an_on_path_attacker_cannot_alter_the_form(market: Market, holder_card: CardSession,
                                                   change: Callable[[dict[str, Any]], None]
                                                   ) -> None:
    proxy = OnPathProxy(market.ports["seller"],
                        rewrite=lambda reply: edit_form(reply, change),
                        answer=evil_delivery_answers(market) if change is swap_delivery
                        else None)
    try:
        atc = holder_card.info().atc
        with pytest.raises(EnvelopeError, match="forged: the order form is not"):
            holder(holder_card, proxy.port).buy(order())
    finally:
        proxy.close()
    nothing_sealed_nor_charged(market, holder_card, atc)
    assert proxy.types() == ["form-request"]  # nothing after the form: no envelope to read
    assert orders_at(market) == 0


def test_an_old_signed_form_replayed_is_refused(market: Market,
                                                holder_card: CardSession) -> None:
    recorded: list[dict[str, Any]] = []

    def replay(reply: dict[str, Any]) -> dict[str, Any]:
        if reply["type"] != "form":
            return reply
        if not recorded:
            recorded.append(reply)
        return recorded[0]

    proxy = OnPathProxy(market.ports["seller"], rewrite=replay)
    try:
        client = holder(holder_card, proxy.port)
        assert client.buy(order()).approved  # the first form is this request's: it verifies
        atc = holder_card.info().atc
        with pytest.raises(EnvelopeError, match="forged: the order form is not"):
            client.buy(order())  # a new nonce: the recorded form's MAC is for the old one
    finally:
        proxy.close()
    assert holder_card.info().atc == atc
    assert balance(market) == account().balance - HONEST_TOTAL
    assert orders_at(market) == 1


def test_the_form_request_names_the_holder_and_a_fresh_nonce(market: Market,
                                                             holder_card: CardSession) -> None:
    proxy = OnPathProxy(market.ports["seller"])
    try:
        client = holder(holder_card, proxy.port)
        client.buy(order())
        client.buy(order())
    finally:
        proxy.close()
    requests = [r for r in proxy.requests if r["type"] == "form-request"]
    assert [r["holder"] for r in requests] == [client.holder] * 2
    assert len({r["nonce"] for r in requests}) == 2 and all(len(r["nonce"]) == 16
                                                          for r in requests)


# -- item 4: how much --------------------------------------------------------------------------


def test_an_amount_over_the_ceiling_is_refused_before_sealing(market: Market,
                                                              holder_card: CardSession) -> None:
    atc = holder_card.info().atc
    with pytest.raises(PolicyError, match=r"comes to 49\.00 EUR, above your ceiling of "
                                          r"27\.90 EUR: nothing was sealed"):
        holder(holder_card, market.ports["seller"], max_amount="27.90").buy(order())
    nothing_sealed_nor_charged(market, holder_card, atc)
    assert orders_at(market) == 0


def test_no_ceiling_and_no_one_asked_is_refused(market: Market,
                                                holder_card: CardSession) -> None:
    atc = holder_card.info().atc
    with pytest.raises(PolicyError, match="state a ceiling"):
        holder(holder_card, market.ports["seller"], max_amount=None).buy(order())
    nothing_sealed_nor_charged(market, holder_card, atc)


def test_the_holder_approves_what_it_is_shown(market: Market,
                                              holder_card: CardSession) -> None:
    shown: list[Quote] = []

    def no(quote: Quote) -> bool:
        shown.append(quote)
        return False

    atc = holder_card.info().atc
    with pytest.raises(PolicyError, match=r"did not approve paying 49\.00 EUR"):
        holder(holder_card, market.ports["seller"], max_amount=None, approve=no).buy(order())
    nothing_sealed_nor_charged(market, holder_card, atc)
    assert shown == [Quote(SELLER, form().issuer, DELIVERY, Money(HONEST_TOTAL, "EUR"))]
    assert str(shown[0]).startswith(f"pay 49.00 EUR to {SELLER}")
    outcome = holder(holder_card, market.ports["seller"], max_amount="49.00",
                     approve=lambda quote: True).buy(order())
    assert outcome.approved and str(outcome.money) == "49.00 EUR"


@pytest.mark.parametrize(("text", "currency", "minor"), [
    ("27.90", "EUR", 2790), ("27.9 EUR", "EUR", 2790), ("27", "EUR", 2700),
    ("1500", "JPY", 1500), ("1.250", "KWD", 1250)])
def test_money_parses_in_the_forms_currency(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(("text", "currency"), [
    ("27.905", "EUR"), ("27.90 USD", "EUR"), ("-1", "EUR"), ("1.5", "JPY"), ("abc", "EUR")])
def test_money_refuses_what_is_not_an_amount(text: str, currency: str) -> None:
    with pytest.raises(OrderError):
        Money.parse(text, currency)


def test_money_prints_as_money() -> None:
    assert [str(Money(2790, "EUR")), str(Money(5, "EUR")), str(Money(1500, "JPY")),
            str(Money(1250, "KWD"))] == ["27.90 EUR", "0.05 EUR", "1500 JPY", "1.250 KWD"]


# -- item 9: one decline on the wire -----------------------------------------------------------


class RecordingIssuer(IssuerServer):
    """The card manager, keeping every authorisation frame exactly as it left."""

    sent: ClassVar[list[bytes]] = []

    async def on_authorise(self, message: Authorise) -> bytes:
        reply = await super().on_authorise(message)
        RecordingIssuer.sent.append(reply)
        return reply


def outcomes_at_seller(m: Market) -> list[dict[str, Any]]:
    conn = sqlite3.connect(m.home / "orders.sqlite")
    try:
        return [codec.decode(row[0]) for row in conn.execute(
            "SELECT outcome FROM orders WHERE outcome IS NOT NULL ORDER BY at, rowid")]
    finally:
        conn.close()


def without(message: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: (len(v) if k in keys else v) for k, v in message.items()}


def test_declines_look_the_same_to_the_seller_and_on_the_wire(
        make_market: Callable[..., Market], holder_card: CardSession) -> None:
    other = "holder:bob@example.org"
    m = make_market(issuer_class=RecordingIssuer, accounts=(
        account(), account(card_number="4000999988887777", holder=other)))
    RecordingIssuer.sent.clear()
    client = holder(holder_card, m.ports["seller"])
    cases = {"unknown card number": order(card_number="4000111122223333"),
             "the card number does not belong to this card holder":
                 order(card_number="4000999988887777"),
             "wrong expiry date": order(card_expiry="10/30")}
    outcomes = [client.buy(o) for o in cases.values()]
    # the holder still learns why, from the receipt its card opened
    assert [o.reason for o in outcomes] == list(cases)
    assert all(o.status == "declined" and Party.ISSUER in o.verified for o in outcomes)
    frames = RecordingIssuer.sent
    assert len(frames) == 3 and len({len(f) for f in frames}) == 1
    wire = [codec.decode(f[4:]) for f in frames]
    # all that differs: the order's own digest, a MAC with a fresh nonce over an identical
    # statement, and the receipt sealed for the holder (of one length)
    assert [without(w, "digest", "mac", "receipt") for w in wire] == 3 * [
        {"type": "authorisation", "code": "declined", "reason": DECLINED, "amount": 4900,
         "digest": 32, "mac": 33, "receipt": len(wire[0]["receipt"])}]
    seen = outcomes_at_seller(m)
    assert len(seen) == 3
    assert [without(s, "order", "issuer_receipt") for s in seen] == 3 * [
        {"order": 16, "status": "declined", "reason": DECLINED, "amount": 4900,
         "issuer_receipt": len(seen[0]["issuer_receipt"])}]
    for reason in cases:
        assert reason not in (m.home / "orders.sqlite").read_bytes().decode("latin-1")
    assert balance(m) == account().balance


def test_declines_are_rate_limited_per_holder_across_a_restart(
        make_market: Callable[..., Market], holder_card: CardSession,
        centre: Any, tmp_path: Path) -> None:
    m = make_market()
    client = holder(holder_card, m.ports["seller"])
    for _ in range(MAX_DECLINES):
        outcome = client.buy(order(card_expiry="10/30"))
        assert outcome.reason == "wrong expiry date"
    # the right details now: not even looked at
    tripped = client.buy(order())
    assert tripped.status == "declined" and tripped.reason == RATE_LIMITED
    assert balance(m) == account().balance
    m.stop()
    m.start()  # the card manager restarts on the same ledger
    client = holder(holder_card, m.ports["seller"])
    again = client.buy(order())
    assert again.status == "declined" and again.reason == RATE_LIMITED
    # another holder is not held back by it
    authority, _ = centre
    bob = "holder:bob@example.org"
    bob_card = market_holder_card(authority, tmp_path / "bob.json", bob)
    ledger = Ledger(m.home / "ledger.sqlite")
    ledger.add_account(account(card_number="4000999988887777", holder=bob, balance=10_000))
    ledger.close()
    bought = holder(bob_card, m.ports["seller"]).buy(order(card_number="4000999988887777"))
    assert bought.approved, bought.reason
    assert balance(m) == account().balance


def test_an_honest_holder_after_a_few_declines_still_buys(
        market: Market, holder_card: CardSession) -> None:
    client = holder(holder_card, market.ports["seller"])
    for _ in range(MAX_DECLINES - 1):
        assert client.buy(order(card_expiry="10/30")).status == "declined"
    outcome = client.buy(order())
    assert outcome.approved, outcome.reason
    assert balance(market) == account().balance - HONEST_TOTAL


@pytest.mark.parametrize("body", [
    {}, {"holder": "holder:alice@example.org"}, {"nonce": bytes(16)},
    {"holder": "holder:alice@example.org", "nonce": bytes(8)},
    {"holder": "seller:shop.example", "nonce": bytes(16)}])
def test_a_form_request_without_a_holder_and_a_nonce_is_malformed(
        market: Market, body: dict[str, Any]) -> None:
    with Connection("127.0.0.1", market.ports["seller"]) as conn, \
            pytest.raises(TransactionError, match="malformed"):
        conn.send_raw(frame(MessageType.FORM_REQUEST, **body))
        expect(conn.receive(), Form)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:  # still serving
        reply = conn.request(FormRequest("holder:alice@example.org", bytes(16)), Form)
    assert len(reply.mac) == 33
