"""Slowloris (issue 10 item 7): hundreds of connections that each send almost nothing must not
keep an honest holder out. Mounted against the seller and the card manager at once, on
loopback, where the attackers and the holder share one address; the purchase goes through
while the attack runs. The table's policy itself is tested sans-IO below."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from host.centre.authority import Authority
from host.parties.admission import ConnectionTable, Limits, Slot
from host.parties.holder import HolderClient
from host.parties.server import ServerConfig
from host.protocol.wire import FrameDecoder, MessageType, frame
from terminal.session import CardSession
from tests.host.market import HOLDER, SELLER, Market, order
from tests.host.slowloris import Kind, Slowloris

PIN, PUK = "1234", "12345678"
ATTACKERS = 256  # per attacked party: the server's whole table
PURCHASE_BOUND = 30.0  # seconds: generous; an unattacked purchase here takes well under one


def wait_until_mounted(attacks: list[Slowloris], least: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while any(a.snapshot().open_now < least for a in attacks):
        assert time.monotonic() < deadline, [a.snapshot() for a in attacks]
        time.sleep(0.1)


@pytest.mark.parametrize("kind", list(Kind), ids=[k.value for k in Kind])
def test_an_honest_purchase_completes_under_slowloris(market: Market, holder_card: CardSession,
                                                      kind: Kind) -> None:
    """256 slow connections on the seller and 256 on the card manager, every one of them from
    127.0.0.1 as the holder is: idle after connecting, trickling a frame one byte per tick
    (header sent, body trickled), or sending one cheap valid request per tick."""
    purchase_under_attack(market, holder_card, kind, ("seller", "issuer"))


def test_the_card_manager_alone_under_slowloris(market: Market, holder_card: CardSession) -> None:
    """The holder reaches the seller freely; the seller's own connections to the card manager
    must get through the attack there, or the order stays pending."""
    purchase_under_attack(market, holder_card, Kind.TRICKLE, ("issuer",))


def purchase_under_attack(market: Market, holder_card: CardSession, kind: Kind,
                          roles: tuple[str, ...]) -> None:
    attacks = [Slowloris(market.ports[role], kind, role, connections=ATTACKERS,
                         duration=PURCHASE_BOUND + 30) for role in roles]
    for attack in attacks:
        attack.start()
    try:
        # the attack holds at least one address's whole share of each server's table ...
        wait_until_mounted(attacks, Limits().max_per_address)
        time.sleep(Limits().shed_after + 1.5)  # ... and has held it for a while
        during = [a.snapshot() for a in attacks]
        started = time.monotonic()
        outcome = HolderClient(holder_card, PIN, "127.0.0.1", market.ports["seller"], seller=SELLER,
                               max_amount="1000000").buy(order())
        elapsed = time.monotonic() - started
        assert all(a.running for a in attacks), "the attack ended before the purchase did"
    finally:
        for attack in attacks:
            attack.stop()
    assert outcome.approved, outcome
    assert elapsed < PURCHASE_BOUND
    for counts in during:
        assert counts.open_now >= Limits().max_per_address, during
    assert not any(a.running for a in attacks)


def test_the_attack_stops_by_itself(market: Market) -> None:
    attack = Slowloris(market.ports["seller"], Kind.CHEAP, connections=8, tick=(0.1, 0.2),
                       duration=1.0).start()
    time.sleep(0.5)
    assert attack.snapshot().open_now > 0
    deadline = time.monotonic() + 10
    while attack.running:
        assert time.monotonic() < deadline, "the attack did not stop after its duration"
        time.sleep(0.1)
    assert attack.snapshot().open_now == 0
    assert attack.snapshot().answers > 0  # it was answered: the requests were real


# -- the table's policy, sans-IO ----------------------------------------------------------------


def fill(table: ConnectionTable, address: str, n: int, now: float, shed: list[Slot]) -> list[Slot]:
    slots = []
    for _ in range(n):
        holder: list[Slot] = []
        slot = table.admit(address, now, lambda h=holder: shed.append(h[0]))
        assert slot is not None
        holder.append(slot)
        slots.append(slot)
    return slots


def test_full_table_sheds_the_connection_waiting_longest() -> None:
    table, shed = ConnectionTable(Limits(max_connections=4, max_per_address=4, shed_after=1.0)), []
    slots = fill(table, "10.0.0.1", 4, 0.0, shed)
    slots[2].waiting(-5.0)  # has waited longest for its peer
    assert table.admit("10.0.0.2", 3.0, lambda: None) is not None
    assert shed == [slots[2]] and len(table) == 4


def test_a_connection_being_served_or_recently_active_is_never_shed() -> None:
    table, shed = ConnectionTable(Limits(max_connections=2, max_per_address=2, shed_after=1.0)), []
    slots = fill(table, "10.0.0.1", 2, 0.0, shed)
    slots[0].serving()  # the server is working on its request
    slots[1].waiting(2.5)  # answered a moment ago
    assert table.admit("10.0.0.2", 3.0, lambda: None) is None  # the newcomer is told busy
    assert shed == [] and len(table) == 2


def test_a_full_address_sheds_its_own_and_the_heaviest_address_goes_first() -> None:
    table, shed = ConnectionTable(Limits(max_connections=6, max_per_address=3, shed_after=1.0)), []
    mine = fill(table, "10.0.0.9", 1, 0.0, shed)
    theirs = fill(table, "10.0.0.1", 3, 0.5, shed)
    fill(table, "10.0.0.2", 2, 0.5, shed)
    theirs[1].waiting(0.2)
    # 10.0.0.1 is at its share: its newcomer sheds one of its own, though ours waited longer
    assert table.admit("10.0.0.1", 5.0, lambda: None) is not None
    assert shed == [theirs[1]] and table.count("10.0.0.1") == 3
    # the table is full: a newcomer from elsewhere sheds from the address holding the most
    assert table.admit("10.0.0.3", 5.0, lambda: None) is not None
    assert shed[1] in theirs and mine[0] not in shed
    table.release(mine[0])
    table.release(mine[0])  # idempotent
    assert len(table) == 5


# -- the two deadlines ------------------------------------------------------------------------


@pytest.fixture
def quick(centre: tuple[Authority, dict[str, list[int]]], tmp_path: Path) -> Iterator[Market]:
    authority, rows = centre
    m = Market(authority, rows, tmp_path / "quick")
    m.home.mkdir()
    m.start(config=ServerConfig(read_timeout=0.6, idle_timeout=1.5))
    yield m
    m.stop()


def test_a_request_trickled_byte_by_byte_is_cut_at_the_request_deadline(quick: Market) -> None:
    """Each byte arrives well within any per-read timeout; the whole request does not."""
    request = frame(MessageType.FORM_REQUEST)
    with socket.create_connection(("127.0.0.1", quick.ports["seller"]), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(request[:4])
        with contextlib.suppress(OSError):
            for byte in request[4:]:
                time.sleep(0.15)
                sock.sendall(bytes([byte]))
        reply = read_one(sock)
        elapsed = time.monotonic() - started
    assert reply["code"] == "timeout" and "whole message" in reply["message"], reply
    assert elapsed < 1.5  # cut at 0.6 s after its first byte, not at the idle bound


def test_an_idle_connection_gets_the_idle_bound_then_a_request_gets_its_own(quick: Market) -> None:
    with socket.create_connection(("127.0.0.1", quick.ports["seller"]), timeout=5) as sock:
        time.sleep(1.0)  # idle longer than the request deadline, shorter than the idle bound
        sock.sendall(frame(MessageType.FORM_REQUEST, holder=HOLDER, nonce=bytes(16)))
        assert read_one(sock)["type"] == "form"
        started = time.monotonic()
        reply = read_one(sock)  # we send nothing more
        elapsed = time.monotonic() - started
    assert reply["code"] == "timeout" and "no request within 1.5 s" in reply["message"], reply
    assert 1.0 < elapsed < 5


def read_one(sock: socket.socket) -> dict:
    decoder = FrameDecoder()
    while True:
        data = sock.recv(65536)
        assert data, "closed without an answer"
        frames = decoder.feed(data)
        if frames:
            return cbor2.loads(frames[0])
