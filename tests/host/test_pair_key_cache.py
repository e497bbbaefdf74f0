"""Keys computed once: a key module runs one Horner evaluation per new peer, whichever of its
pooled applets serves the operation, and a whole order between parties that have met costs
none (card_applet/pairkeys.py). Horner evaluations are counted by wrapping
card_applet.blom.shared_element, the only place an applet evaluates its row."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from card_applet import blom
from card_applet.pairkeys import PairKeyCache
from host.parties.keymodule import DEFAULT_POOL, KeyModule
from host.parties.softcard import software_card
from terminal.session import CardSession
from tests.card_applet.conftest import DELIVERY, HOLDER, ISSUER, SELLER, row_of
from tests.host.market import Market, order
from tests.host.test_transaction import client_for


@pytest.fixture
def horners(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    seen: list[int] = []
    real = blom.shared_element

    def counted(row: list[int], x: int) -> int:
        seen.append(x)  # list.append is atomic: the servers run on another thread
        return real(row, x)

    monkeypatch.setattr(blom, "shared_element", counted)
    yield seen


def test_pooled_module_evaluates_once_per_peer(horners: list[int]) -> None:
    """32 applets, three peers, many operations in flight at once: three Horners, and every
    box opens at its peer (the shared keys are the right ones)."""
    module = KeyModule.software(SELLER, row_of(SELLER))
    peers = {p: software_card(p, row_of(p)) for p in (HOLDER, ISSUER, DELIVERY)}
    for card in peers.values():
        card.set_peer(SELLER)
    horners.clear()  # the peers' own MSE

    async def traffic() -> list[tuple[str, bytes]]:
        async def one(n: int) -> tuple[str, bytes]:
            peer = (HOLDER, ISSUER, DELIVERY)[n % 3]
            box = await module.seal(peer, f"part {n}".encode(), b"aad", b"ctx")
            await asyncio.sleep(0)  # let the pool rotate
            return peer, box

        return await asyncio.gather(*(one(n) for n in range(6 * DEFAULT_POOL)))

    boxes = asyncio.run(traffic())
    assert sorted(horners) == sorted(blom.x_of(p) for p in (HOLDER, ISSUER, DELIVERY))
    for n, (peer, box) in enumerate(boxes):
        assert peers[peer].decrypt(box, b"aad", b"ctx") == f"part {n}".encode()


def test_module_cache_is_bounded(horners: list[int]) -> None:
    module = KeyModule.software(SELLER, row_of(SELLER), pool=1, cache=2)

    async def seal_for(*peers: str) -> None:
        for peer in peers:
            await module.seal(peer, b"", b"", b"")

    asyncio.run(seal_for(ISSUER, HOLDER, ISSUER, HOLDER))
    assert len(horners) == 2
    asyncio.run(seal_for(DELIVERY, HOLDER))  # DELIVERY evicts ISSUER, not HOLDER
    assert len(horners) == 3
    asyncio.run(seal_for(ISSUER))
    assert len(horners) == 4


def test_software_pool_shares_one_cache() -> None:
    module = KeyModule.software(SELLER, row_of(SELLER), pool=3)
    caches = {id(card.reader.applet.pair_keys)  # type: ignore[attr-defined]
              for card in module.sessions}
    assert len(module.sessions) == 3 and len(caches) == 1
    assert isinstance(module.sessions[0].reader.applet.pair_keys,  # type: ignore[attr-defined]
                      PairKeyCache)


def test_repeated_orders_cost_no_horner(market: Market, holder_card: CardSession,
                                        horners: list[int]) -> None:
    """The holder's card and the three parties: the first order meets every peer once
    (at most one Horner per party and peer), the next ones meet none that is new."""
    client = client_for(market, holder_card)
    assert client.buy(order()).approved
    first = len(horners)
    assert 0 < first <= 4 * 3
    assert len(set(horners)) <= 4  # every evaluation is at one of the four parties' points
    for _ in range(2):
        assert client.buy(order(lines=(("C-300", 1),))).approved
    assert len(horners) == first, f"{len(horners) - first} Horner(s) in two repeat orders"
