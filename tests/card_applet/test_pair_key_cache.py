"""The card's RAM cache of pair keys (card_applet/pairkeys.py, docs/apdu.md 1.9): MSE runs
one Horner evaluation per new peer, the cache is bounded, cleared with the session, tied to
the row, and changes nothing a command answers. Horner evaluations are counted by wrapping
card_applet.blom.shared_element, the only place the card evaluates its row."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from card_applet import blom, keys
from card_applet.applet import Applet
from card_applet.pairkeys import DEFAULT_CAPACITY, PairKeyCache
from card_applet.state import MemoryStore
from tests.card_applet.applet_helpers import OK, encipher, open_as_seller
from tests.card_applet.conftest import (
    DELIVERY,
    HOLDER,
    ISSUER,
    SELLER,
    CardDriver,
    pair_key_of,
    personalised_state,
)


@pytest.fixture
def horners(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The points the card evaluated its row at, in order."""
    seen: list[int] = []
    real = blom.shared_element

    def counted(row: list[int], x: int) -> int:
        seen.append(x)
        return real(row, x)

    monkeypatch.setattr(blom, "shared_element", counted)
    yield seen


def set_peer(card: CardDriver, peer: str) -> None:
    assert card.set_peer(peer).sw == OK


def current_key(card: CardDriver) -> bytes:
    assert card.applet.v.peer is not None
    return card.applet.v.peer.pair_key


def test_one_horner_per_new_peer(card: CardDriver, horners: list[int]) -> None:
    assert card.verify().sw == OK
    for _ in range(4):  # a holder's orders: seller, card manager, delivery, seller, ...
        for peer in (SELLER, ISSUER, DELIVERY):
            set_peer(card, peer)
            assert current_key(card) == pair_key_of(HOLDER, peer)
    assert horners == [blom.x_of(SELLER), blom.x_of(ISSUER), blom.x_of(DELIVERY)]
    # the cached key is the key: a box sealed after a cached MSE opens with the vectors' key
    set_peer(card, SELLER)
    assert open_as_seller(encipher(card, b"order", b"aad"), b"aad")[1] == b"order"
    assert len(horners) == 3


def test_cached_mse_is_still_a_new_peer(card: CardDriver, horners: list[int]) -> None:
    """MSE semantics are unchanged: the peer is replaced, `authenticated` starts false, the
    outstanding challenge is dropped, whether the key came from the cache or not."""
    set_peer(card, SELLER)
    challenge = card.ok(0x00, 0x84, 0x00, 0x00, le=16)
    key = keys.confirm_key(pair_key_of(SELLER, HOLDER), SELLER.encode(), HOLDER.encode())
    assert card.cmd(0x00, 0x82, 0, 0, keys.confirm_mac(key, challenge)).sw == OK
    assert card.applet.v.peer is not None and card.applet.v.peer.authenticated
    stale = card.ok(0x00, 0x84, 0x00, 0x00, le=16)
    set_peer(card, ISSUER)
    set_peer(card, SELLER)  # from the cache
    assert len(horners) == 2
    assert card.applet.v.peer is not None and not card.applet.v.peer.authenticated
    assert card.cmd(0x00, 0x82, 0, 0, keys.confirm_mac(key, stale)).sw == 0x6985


def test_failed_mse_keeps_the_peer_and_caches_nothing(card: CardDriver,
                                                      horners: list[int]) -> None:
    set_peer(card, SELLER)
    assert card.set_peer(HOLDER).sw == 0x6A80  # own identifier
    assert current_key(card) == pair_key_of(HOLDER, SELLER)
    assert len(card.applet.pair_keys) == 1 and len(horners) == 1


def test_cache_is_a_bounded_lru(card: CardDriver, horners: list[int]) -> None:
    peers = [f"seller:{n}.example" for n in range(DEFAULT_CAPACITY + 1)]
    for peer in peers:
        set_peer(card, peer)
    assert len(card.applet.pair_keys) == DEFAULT_CAPACITY
    set_peer(card, peers[-1])  # recent: cached
    assert len(horners) == DEFAULT_CAPACITY + 1
    set_peer(card, peers[0])  # the least recently used, evicted: evaluated again
    assert len(horners) == DEFAULT_CAPACITY + 2
    assert horners[-1] == blom.x_of(peers[0])


@pytest.mark.parametrize("end", ["reset", "select", "leave"])
def test_cache_goes_with_the_session(card: CardDriver, horners: list[int], end: str) -> None:
    """Power on/off, reset, SELECT and leaving the application clear it: what a terminal
    finds in the cache, that terminal put there in this session."""
    set_peer(card, SELLER)
    if end == "reset":
        card.applet.reset()
    elif end == "leave":
        assert card.cmd(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex("3F00")).sw == OK
    assert len(card.applet.pair_keys) == 0 or end == "select"
    assert card.select().sw == OK
    assert len(card.applet.pair_keys) == 0
    set_peer(card, SELLER)
    assert len(horners) == 2


def test_no_command_reads_the_cache(card: CardDriver) -> None:
    """Every class-00/80 INS with the usual P1/P2 shapes, and GET DATA at every tag, after
    MSE to three peers: no answer carries any part of a cached pair key."""
    assert card.verify().sw == OK
    for peer in (ISSUER, DELIVERY, SELLER):
        set_peer(card, peer)
    cached = [pair_key_of(HOLDER, p) for p in (ISSUER, DELIVERY, SELLER)]
    pieces = {key[i : i + 8] for key in cached for i in range(0, 32, 8)}
    answers: list[bytes] = []
    for cla in (0x00, 0x80):
        for ins in range(256):
            for p1, p2 in ((0, 0), (0x41, 0xA4), (0x86, 0x80), (0x80, 0x86), (0, 0x81),
                           (0x04, 0x00), (0xFF, 0xFF)):
                for data in (b"", bytes(16)):
                    lc = bytes((len(data),)) if data else b""
                    answers.append(card.applet.process(bytes((cla, ins, p1, p2)) + lc + data
                                                       + b"\x00"))
            if card.applet.v.peer is None or not card.applet.v.selected:
                card.select()
                card.verify()
                set_peer(card, SELLER)
    for tag in range(0x10000):
        answers.append(card.applet.process(bytes((0x00, 0xCA, tag >> 8, tag & 0xFF, 0))))
    assert len(card.applet.pair_keys) >= 1
    assert not any(piece in answer for answer in answers for piece in pieces)


def test_shared_cache_follows_the_row() -> None:
    """A cache handed to applets of different rows never gives one the other's key."""
    shared = PairKeyCache()
    stores = [MemoryStore(personalised_state(who)) for who in (HOLDER, SELLER)]
    alice, seller = (CardDriver(Applet(store, shared), store) for store in stores)
    for card in (alice, seller):
        assert card.select().sw == OK
    for _ in range(2):
        set_peer(alice, DELIVERY)
        assert current_key(alice) == pair_key_of(HOLDER, DELIVERY)
        set_peer(seller, DELIVERY)
        assert current_key(seller) == pair_key_of(SELLER, DELIVERY)


def test_cache_unit() -> None:
    cache = PairKeyCache(2)
    row = b"r" * 32
    cache.bind(row)
    cache.put(b"a", b"A")
    cache.put(b"b", b"B")
    assert cache.get(b"a") == b"A"  # a is now the most recent
    cache.put(b"c", b"C")
    assert (cache.get(b"b"), cache.get(b"a"), cache.get(b"c")) == (None, b"A", b"C")
    cache.bind(bytes(row))  # equal bytes: the same row
    assert len(cache) == 2
    cache.bind(b"s" * 32)
    assert len(cache) == 0
    with pytest.raises(ValueError):
        PairKeyCache(0)
