"""The transaction through the three parties in-process (asyncio servers on free ports, one
background loop) with the holder's card on an in-process reader: the outcomes, each party's
visibility, the declines and the attacks. tests/e2e runs the same parties as processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from card_applet.applet import Applet
from card_applet.state import FileStore, read_state
from host.centre.authority import Authority
from host.errors import PolicyError, TransactionError
from host.parties.connection import Connection
from host.parties.holder import HolderClient
from host.parties.issuer import IssuerServer
from host.parties.keymodule import KeyModule
from host.parties.server import ServerConfig
from host.parties.softcard import software_card
from host.protocol import codec, envelope, messages
from host.protocol.envelope import Envelope, SealedOrder
from host.protocol.messages import Authorise, ErrorMessage, Message, OrderOutcome, expect
from host.protocol.order import DEFAULT_GRANTS, OrderField, PartitionPolicy, Party
from host.protocol.wire import MessageType, frame
from host.storage.ledger import Ledger
from host.storage.shipments import Shipments
from terminal.cardauth import CardPairing
from terminal.inprocess import InProcessReader
from terminal.session import CardSession
from tests.host.market import (
    CARD_NUMBER,
    EVIL,
    HOLDER,
    ISSUER,
    SELLER,
    Market,
    account,
    dump,
    form,
    issue_market_rows,
    order,
)
from tests.host.market import holder_card as market_holder_card
from tests.host.stores import count

PIN, PUK = "1234", "12345678"
CEILING = "1000.00"  # EUR: above every honest order here
DESTINATION = "Alice's office, 5 avenue Foch, Lyon"


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, dict[str, list[int]]]:
    authority = Authority(tmp_path_factory.mktemp("centre"))
    authority.init(k=8)
    return authority, issue_market_rows(authority)


@pytest.fixture
def holder_card(centre: tuple[Authority, dict[str, list[int]]], tmp_path: Path) -> CardSession:
    return market_holder_card(centre[0], tmp_path / "holder.json")


@pytest.fixture
def party_engine() -> Callable[[str], Path | str] | None:
    """Where the market's parties keep their stores: SQLite files in its home here;
    test_transaction_postgresql.py runs tests of this module on PostgreSQL."""
    return None


@pytest.fixture
def make_market(centre: tuple[Authority, dict[str, list[int]]], tmp_path: Path,
                party_engine: Callable[[str], Path | str] | None
                ) -> Iterator[Callable[..., Market]]:
    started: list[Market] = []

    def make(**kwargs: object) -> Market:
        authority, rows = centre
        m = Market(authority, rows, tmp_path / f"market{len(started)}", engine=party_engine)
        m.home.mkdir()
        started.append(m)
        m.start(**kwargs)  # type: ignore[arg-type]
        return m

    yield make
    for m in started:
        m.stop()


@pytest.fixture
def market(make_market: Callable[..., Market]) -> Market:
    return make_market()


def client_for(market: Market, card: CardSession) -> HolderClient:
    return HolderClient(card, PIN, "127.0.0.1", market.ports["seller"], seller=SELLER,
                        max_amount=CEILING)


def prepared(market: Market, card: CardSession) -> tuple[HolderClient, SealedOrder]:
    client = client_for(market, card)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        _form, sealed = client.prepare(conn, order())
    return client, sealed


def send(market: Market, env: Envelope) -> object:
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        conn.send_raw(frame(MessageType.ORDER, envelope=env.to_cbor()))
        return expect(conn.receive(), OrderOutcome).to_cbor()


def balance(market: Market) -> int:
    ledger = Ledger(market.location("ledger"))
    try:
        acc = ledger.account(CARD_NUMBER)
        assert acc is not None
        return acc.balance
    finally:
        ledger.close()


def shipments(market: Market) -> int:
    store = Shipments(market.location("ship"))
    try:
        return count(store, "shipments")
    finally:
        store.close()


# -- the purchase ---------------------------------------------------------------------------


def test_purchase_completes_and_debits_once(market: Market, holder_card: CardSession) -> None:
    outcome = client_for(market, holder_card).buy(order())
    assert outcome.status == "completed", outcome.reason
    assert outcome.amount == 2500 + 2 * 1200
    assert outcome.tracking and outcome.tracking.startswith("TRK-")
    assert outcome.verified == {Party.ISSUER, Party.DELIVERY}
    assert balance(market) == 100_000 - 4900
    assert shipments(market) == 1


def test_two_orders_in_a_row(market: Market, holder_card: CardSession) -> None:
    client = client_for(market, holder_card)
    assert client.buy(order()).approved
    assert client.buy(order(lines=(("C-300", 3),))).approved
    assert balance(market) == 100_000 - 4900 - 2700


def record_plaintexts(module: KeyModule) -> list[bytes]:
    seen: list[bytes] = []
    original = module.open

    async def spying(*args: object, **kwargs: object) -> bytes:
        plaintext = await original(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(plaintext)
        return plaintext

    module.open = spying  # type: ignore[method-assign]
    return seen


def test_each_party_decrypts_only_its_fields(market: Market, holder_card: CardSession) -> None:
    seller_saw = record_plaintexts(market.servers["seller"].keys)
    issuer_saw = record_plaintexts(market.servers["issuer"].keys)
    delivery_saw = record_plaintexts(market.servers["delivery"].keys)
    assert client_for(market, holder_card).buy(order()).approved
    seller_text, issuer_text = b"".join(seller_saw), b"".join(issuer_saw)
    delivery_text = b"".join(delivery_saw)
    assert b"smart card reader" in seller_text
    assert CARD_NUMBER.encode() not in seller_text
    assert CARD_NUMBER.encode() in issuer_text
    assert DESTINATION.encode() not in issuer_text
    assert b"smart card reader" not in issuer_text
    assert DESTINATION.encode() in delivery_text
    assert CARD_NUMBER.encode() not in delivery_text
    # and nothing of it reached the seller's database either
    assert CARD_NUMBER not in dump(market.home / "orders.sqlite")
    assert "avenue Foch" not in dump(market.home / "ledger.sqlite")
    assert "avenue Foch" in dump(market.home / "ship.sqlite")


def test_policy_marked_exposure_is_honoured(make_market: Callable[..., Market],
                                            holder_card: CardSession) -> None:
    grants = dict(DEFAULT_GRANTS)
    grants[Party.SELLER] = grants[Party.SELLER] | {OrderField.CARD_NUMBER}
    policy = PartitionPolicy(grants, frozenset({(OrderField.CARD_NUMBER, Party.SELLER)}))
    m = make_market(seller_form=form(policy=policy))
    seen = record_plaintexts(m.servers["seller"].keys)
    with pytest.raises(PolicyError, match="exposes card_number to the seller"):
        client_for(m, holder_card).buy(order())  # nobody asked the holder
    accepting = HolderClient(holder_card, PIN, "127.0.0.1", m.ports["seller"],
                             seller=SELLER, max_amount=CEILING,
                             accept=frozenset({(OrderField.CARD_NUMBER, Party.SELLER)}))
    assert accepting.buy(order()).approved
    assert CARD_NUMBER.encode() in b"".join(seen)


# -- declines ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "reason"), [
    ({"order": {"card_expiry": "10/29"}}, "wrong expiry"),
    ({"account": {"balance": 1000}}, "insufficient funds"),
    ({"account": {"blocked": True}}, "blocked"),
    ({"account": {"holder": "holder:bob@example.org"}}, "does not belong"),
    ({"order": {"holder_name": "Mallory"}}, "name does not match"),
    ({"order": {"card_number": "4000999999999999"}}, "unknown card"),
])
def test_declines(make_market: Callable[..., Market], holder_card: CardSession,
                  change: dict[str, dict[str, object]], reason: str) -> None:
    m = make_market(accounts=(account(**change.get("account", {})),))
    outcome = client_for(m, holder_card).buy(order(**change.get("order", {})))
    assert outcome.status == "declined"
    assert reason in outcome.reason
    assert outcome.verified == {Party.ISSUER}  # the card opened the card manager's receipt
    assert balance(m) == account(**change.get("account", {})).balance
    assert shipments(m) == 0  # the delivery part never left the seller


# -- attacks ----------------------------------------------------------------------------------


def test_replayed_envelope_is_refused(market: Market, holder_card: CardSession) -> None:
    client, sealed = prepared(market, holder_card)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        assert client.send(conn, sealed).approved
    with pytest.raises(TransactionError, match="replay"):
        send(market, sealed.envelope)
    assert balance(market) == 100_000 - 4900


def test_part_swapped_between_orders_is_refused(market: Market,
                                                holder_card: CardSession) -> None:
    _, first = prepared(market, holder_card)
    _, second = prepared(market, holder_card)
    swapped = Envelope(second.envelope.header,
                       {**second.envelope.parts, Party.ISSUER: first.envelope.parts[Party.ISSUER]})
    outcome = send(market, swapped)
    assert outcome["status"] == "failed" and "forged" in outcome["reason"]
    assert balance(market) == 100_000


def test_part_relabelled_for_another_party_is_refused(market: Market,
                                                      holder_card: CardSession) -> None:
    _, sealed = prepared(market, holder_card)
    parts = dict(sealed.envelope.parts)
    parts[Party.ISSUER] = parts[Party.DELIVERY]
    outcome = send(market, Envelope(sealed.envelope.header, parts))
    assert outcome["status"] == "failed" and "forged" in outcome["reason"]


def test_dropped_part_is_refused(market: Market, holder_card: CardSession) -> None:
    _, sealed = prepared(market, holder_card)
    cbor = sealed.envelope.to_cbor()
    del cbor["parts"]["delivery"]
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        conn.send_raw(frame(MessageType.ORDER, envelope=cbor))
        with pytest.raises(TransactionError, match="exactly the seller, issuer and delivery"):
            expect(conn.receive(), OrderOutcome)


def test_seller_cannot_open_the_card_managers_part(market: Market,
                                                   holder_card: CardSession) -> None:
    _, sealed = prepared(market, holder_card)
    seller_keys: KeyModule = market.servers["seller"].keys
    with pytest.raises(TransactionError, match="forged"):
        market.run(seller_keys.open(HOLDER, sealed.envelope.parts[Party.ISSUER],
                                    envelope.part_aad(Party.ISSUER, sealed.envelope.header),
                                    envelope.context("part", sealed.header.order_id)))


def test_holder_will_not_confirm_an_impostor(make_market: Callable[..., Market],
                                            holder_card: CardSession,
                                            centre: tuple[Authority, dict]) -> None:
    _, rows = centre
    m = make_market(issuer_keys=lambda: KeyModule(ISSUER, [software_card(EVIL, rows[EVIL])]))
    with pytest.raises(TransactionError, match="unconfirmed"):
        client_for(m, holder_card).buy(order())


def test_seller_will_not_forward_to_an_impostor(make_market: Callable[..., Market],
                                               holder_card: CardSession,
                                               centre: tuple[Authority, dict]) -> None:
    """Even with an envelope sealed without the holder's confirmations, the seller confirms
    the card manager itself before handing it anything."""
    _, rows = centre
    m = make_market(issuer_keys=lambda: KeyModule(ISSUER, [software_card(EVIL, rows[EVIL])]))
    client = client_for(m, holder_card)
    with Connection("127.0.0.1", m.ports["seller"]) as conn:
        the_form = client.fetch_form(conn)
    header = envelope.new_header(the_form, HOLDER)
    sealed = envelope.build(order(), the_form, header,
                            lambda p, pt, aad, ctx: client.seal(p, pt, aad, ctx, the_form))
    outcome = send(m, sealed.envelope)
    assert outcome["status"] == "failed" and "unconfirmed" in outcome["reason"]


def test_stale_timestamp_is_refused(market: Market, holder_card: CardSession) -> None:
    client = client_for(market, holder_card)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        the_form = client.fetch_form(conn)
    header = envelope.new_header(the_form, HOLDER, timestamp=1_000_000_000)
    sealed = envelope.build(order(), the_form, header,
                            lambda p, pt, aad, ctx: client.seal(p, pt, aad, ctx, the_form))
    with pytest.raises(TransactionError, match="stale"):
        send(market, sealed.envelope)


def test_cloned_card_counter_is_declined(make_market: Callable[..., Market],
                                        holder_card: CardSession, tmp_path: Path) -> None:
    """A clone replays the card's state from before a purchase: its counter goes back."""
    state = Path(holder_card.reader.applet.store.path)  # type: ignore[attr-defined]
    before = state.read_bytes()
    m = make_market()
    assert client_for(m, holder_card).buy(order()).approved
    clone_path = tmp_path / "clone.json"
    clone_path.write_bytes(before)
    clone = CardSession(InProcessReader(Applet(FileStore(clone_path))))
    # a clone holds the card's authentication key too: only the counter gives it away
    copied = read_state(clone_path)
    assert copied.card_auth_key is not None
    clone.authenticate_card(CardPairing(HOLDER, copied.serial, copied.card_auth_key))
    outcome = client_for(m, clone).buy(order())
    assert outcome.status == "declined" and "counter" in outcome.reason
    assert balance(m) == 100_000 - 4900


def test_short_read_timeout_closes_an_idle_connection(make_market: Callable[..., Market]) -> None:
    m = make_market(config=ServerConfig(read_timeout=0.3))
    with Connection("127.0.0.1", m.ports["seller"]) as conn:
        message = conn.receive()  # we send nothing: the server gives up on us
        assert isinstance(message, ErrorMessage)
        assert message.code == "timeout"
        with pytest.raises(TransactionError, match="connection-lost"):
            conn.receive()


@pytest.mark.parametrize("fields", [
    {1: "one", "amount": 4900},
    {"items": "A-100", "amount": 4900},
    {"items": [["A-100", "smart card reader", "2"]], "amount": 5000},
    {"items": [["A-100", "smart card reader", 1]], "amount": True},
    {"items": [["Z-9", "nothing", 1]], "amount": 100},
    {"items": [["A-100", "smart card reader", 1]], "amount": 2500, "card_number": "4000"},
])
def test_a_dishonest_terminal_with_a_genuine_card_gets_a_clear_error(
        market: Market, holder_card: CardSession, fields: dict) -> None:
    """The parts authenticate (a real card sealed them), but what is inside is nonsense:
    each is refused with a named reason, never an internal error."""
    client = client_for(market, holder_card)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        the_form = client.fetch_form(conn)
    header = envelope.new_header(the_form, HOLDER)
    header_bytes = header.to_bytes()
    parts = {}
    for party in Party:
        content = fields if party is Party.SELLER else {"amount": 1}
        salt = b"\x00" * envelope.SALT_SIZE
        commitments = {p.value: envelope.commitment(salt, codec.encode(content)) for p in Party}
        plaintext = codec.encode({"fields": content, "salt": salt, "commitments": commitments})
        parts[party] = client.seal(party, plaintext, envelope.part_aad(party, header_bytes),
                                   envelope.context("part", header.order_id), the_form)
    with pytest.raises(TransactionError) as info:
        send(market, Envelope(header_bytes, parts))
    assert info.value.code in ("malformed", "policy", "amount", "unknown-item")
    assert "internal" not in str(info.value)


# -- review: no charge without an outcome, and the holder checks what it is told --------------


def test_holder_refuses_a_form_naming_another_card_manager(make_market: Callable[..., Market],
                                                          holder_card: CardSession) -> None:
    m = make_market(seller_form=form(issuer=EVIL))
    client = HolderClient(holder_card, PIN, "127.0.0.1", m.ports["seller"], issuer=ISSUER,
                          seller=SELLER, max_amount=CEILING)
    atc_before = holder_card.info().atc
    with pytest.raises(PolicyError, match=f"names {EVIL} as card manager"):
        client.buy(order())
    assert holder_card.info().atc == atc_before  # the card sealed nothing


def flip(box: bytes, at: int = -20) -> bytes:
    flipped = bytearray(box)
    flipped[at] ^= 0x01
    return bytes(flipped)


def test_forged_delivery_part_after_the_debit_is_reversed(market: Market,
                                                          holder_card: CardSession) -> None:
    client, sealed = prepared(market, holder_card)
    parts = dict(sealed.envelope.parts)
    parts[Party.DELIVERY] = flip(parts[Party.DELIVERY])
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        conn.send_raw(frame(MessageType.ORDER, envelope=Envelope(sealed.envelope.header,
                                                                 parts).to_cbor()))
        outcome = client.read_outcome(expect(conn.receive(), OrderOutcome), sealed)
    assert outcome.status == "failed" and "reversed" in outcome.reason
    assert outcome.charge_verified  # the card opened the card manager's reversal receipt
    assert balance(market) == 100_000
    assert shipments(market) == 0


class LyingLink(IssuerServer):
    """Debits, then the seller sees an `error` frame instead of the authorisation: what a
    network attacker could substitute, since error frames are not authenticated."""

    async def on_authorise(self, message: Authorise) -> bytes:
        await super().on_authorise(message)
        raise TransactionError("forged", "a lie on the wire")


def test_a_refusal_after_the_debit_is_reversed(make_market: Callable[..., Market],
                                               holder_card: CardSession) -> None:
    m = make_market(issuer_class=LyingLink)
    outcome = client_for(m, holder_card).buy(order())
    assert outcome.status == "failed" and outcome.charge_verified
    assert "no charge stands" in outcome.reason
    assert balance(m) == 100_000


class SlowToAnswer(IssuerServer):
    """Commits the debit, then fails to answer for a while (a crash, a partition)."""

    answer_after = 0.0

    async def on_authorise(self, message: Authorise) -> bytes:
        reply = await super().on_authorise(message)
        if time.monotonic() < self.answer_after:
            raise TransactionError("internal", "not answering yet")
        return reply


def test_a_retransmission_after_the_window_gets_the_recorded_decision(
        make_market: Callable[..., Market], holder_card: CardSession) -> None:
    # a 3 s window leaves room for a loaded machine between sealing and the first check;
    # the card manager stays silent well past it, so the answer comes on a late retransmission
    SlowToAnswer.answer_after = time.monotonic() + 7.0
    m = make_market(issuer_class=SlowToAnswer, issuer_config=ServerConfig(window=3))
    client = client_for(m, holder_card)
    first = client.buy(order())
    assert first.status == "pending"
    assert client.last_sealed is not None
    final = client.wait_for_outcome(client.last_sealed, timeout=40)
    assert final.status == "completed", final.reason  # not "stale": it was decided in time
    assert balance(m) == 100_000 - 4900


def test_counters_arriving_out_of_order_are_not_a_clone(market: Market,
                                                       holder_card: CardSession) -> None:
    _, first = prepared(market, holder_card)
    client, second = prepared(market, holder_card)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        assert client.send(conn, second).approved
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        assert client.send(conn, first).approved
    assert balance(market) == 100_000 - 2 * 4900


def outcome_message(sealed: SealedOrder, **body: object) -> OrderOutcome:
    return expect(messages.parse(frame(MessageType.OUTCOME, order=sealed.header.order_id,
                                       **body)[4:]), OrderOutcome)


def test_the_holder_does_not_take_the_sellers_word(market: Market,
                                                   holder_card: CardSession) -> None:
    client, sealed = prepared(market, holder_card)
    with pytest.raises(TransactionError, match="said nothing the card could check"):
        client.read_outcome(outcome_message(sealed, status="declined", reason="blocked"),
                            sealed)
    with pytest.raises(TransactionError, match="said nothing the card could check"):
        client.read_outcome(outcome_message(sealed, status="completed", reason="ok",
                                            tracking="TRK-1"), sealed)
    # a receipt of another order does not open for this one
    _, other = prepared(market, holder_card)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        real = expect(_send_raw(conn, other), OrderOutcome)
    with pytest.raises(TransactionError, match="forged"):
        client.read_outcome(outcome_message(sealed, status="completed", reason="ok",
                                            issuer_receipt=real.issuer_receipt,
                                            delivery_receipt=real.delivery_receipt),
                            sealed)
    # a failure the seller reports before any charge is accepted, but marked unverified
    unverified = client.read_outcome(outcome_message(sealed, status="failed", reason="x"),
                                     sealed)
    assert not unverified.charge_verified


def _send_raw(conn: Connection, sealed: SealedOrder) -> Message:
    conn.send_raw(frame(MessageType.ORDER, envelope=sealed.envelope.to_cbor()))
    return conn.receive()


def test_an_absurd_amount_in_the_card_managers_part_is_refused(
        market: Market, holder_card: CardSession) -> None:
    client = client_for(market, holder_card)
    with Connection("127.0.0.1", market.ports["seller"]) as conn:
        the_form = client.fetch_form(conn)
    header = envelope.new_header(the_form, HOLDER)
    header_bytes = header.to_bytes()
    good = envelope.split(order(), the_form)
    good[Party.ISSUER]["amount"] = 2**70
    parts, salt = {}, b"\x00" * envelope.SALT_SIZE
    commitments = {p.value: envelope.commitment(salt, codec.encode(good[p])) for p in Party}
    for party in Party:
        plaintext = codec.encode({"fields": good[party], "salt": salt,
                                  "commitments": commitments})
        parts[party] = client.seal(party, plaintext, envelope.part_aad(party, header_bytes),
                                   envelope.context("part", header.order_id), the_form)
    outcome = send(market, Envelope(header_bytes, parts))
    assert outcome["status"] == "failed" and "malformed" in outcome["reason"]
    assert "internal" not in outcome["reason"]
    assert balance(market) == 100_000


def test_a_holder_that_keeps_its_connection_reopens_it_when_the_seller_closed_it(
        make_market: Callable[..., Market], holder_card: CardSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """keep_connection: orders back to back share one connection, each confirming every
    party on the card; once the seller has closed it (idle for 0.3 s here), the next order
    asks for its form on a new one and completes."""
    m = make_market(config=ServerConfig(idle_timeout=0.3))
    client = HolderClient(holder_card, PIN, "127.0.0.1", m.ports["seller"], seller=SELLER,
                          max_amount=CEILING, keep_connection=True)
    try:
        for _ in range(2):
            assert client.buy(order()).approved
        assert client.opened == 1
        time.sleep(0.8)  # the seller closes the idle connection
        assert client.buy(order()).approved
        assert client.opened == 2
        # the same close, unseen before the form request goes (the seller closing it just
        # then): the request fails on the old connection and is asked again on a new one
        time.sleep(0.8)
        monkeypatch.setattr(Connection, "quiet", lambda self: True)
        assert client.buy(order()).approved
        assert client.opened == 3
    finally:
        client.close()
