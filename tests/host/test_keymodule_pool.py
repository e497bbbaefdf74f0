"""A software key module's pool of applets: peer affinity (an idle applet that already has the
peer serves it, so MSE runs only on a real change of peer), and sessions lent one caller at a
time, waited for when all are lent, never lost by a waiter that gives up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from host.errors import ErrorCode, Refused
from host.parties import keymodule
from host.parties.keymodule import KeyModule
from host.parties.softcard import software_card
from tests.card_applet.conftest import DELIVERY, HOLDER, ISSUER, SELLER, row_of

PEERS = (HOLDER, ISSUER, DELIVERY)


def counting_mse(module: KeyModule) -> list[str]:
    """The peers every MSE of the module's applets was sent for."""
    sent: list[str] = []
    for card in module.sessions:
        def counted(peer: str, real: Callable[[str], None] = card.set_peer) -> None:
            sent.append(peer)
            real(peer)
        card.set_peer = counted  # type: ignore[method-assign]
    return sent


def test_an_applet_that_has_the_peer_serves_it_without_mse() -> None:
    """Operations for three peers, interleaved and concurrent, on a pool of eight: after each
    peer's first MSE, none (the pool used to rotate, and MSE ran on most operations)."""
    module = KeyModule.software(SELLER, row_of(SELLER), pool=8)
    sent = counting_mse(module)
    peers = {p: software_card(p, row_of(p)) for p in PEERS}
    for card in peers.values():
        card.set_peer(SELLER)

    async def traffic() -> list[tuple[str, bytes]]:
        async def one(n: int) -> tuple[str, bytes]:
            peer = PEERS[n % 3]
            box = await module.seal(peer, f"part {n}".encode(), b"aad", b"ctx")
            await asyncio.sleep(0)
            return peer, box

        out: list[tuple[str, bytes]] = []
        for _ in range(10):
            out += await asyncio.gather(*(one(n) for n in range(6)))
        return out

    boxes = asyncio.run(traffic())
    assert sorted(sent) == sorted(PEERS), sent
    for n, (peer, box) in enumerate(boxes):  # every box is for the peer it was sealed for
        assert peers[peer].decrypt(box, b"aad", b"ctx") == f"part {n % 6}".encode()


def test_a_new_peer_takes_the_least_recently_used_applet() -> None:
    """Two applets: the one that served the most recent peer keeps it."""
    module = KeyModule.software(SELLER, row_of(SELLER), pool=2)
    sent = counting_mse(module)

    async def seal_for(*peers: str) -> None:
        for peer in peers:
            await module.seal(peer, b"", b"", b"")

    asyncio.run(seal_for(HOLDER, ISSUER, DELIVERY, ISSUER, DELIVERY))
    assert sent == [HOLDER, ISSUER, DELIVERY]  # DELIVERY replaced HOLDER, not ISSUER


def test_a_card_gets_mse_every_time() -> None:
    """A card behind a reader can be reset behind the module's back: no affinity there."""
    card = software_card(SELLER, row_of(SELLER))
    module = KeyModule(SELLER, [card])
    sent = counting_mse(module)

    async def seal_twice() -> None:
        for _ in range(2):
            await module.seal(HOLDER, b"", b"", b"")

    asyncio.run(seal_twice())
    assert sent == [HOLDER, HOLDER]


def test_a_waiter_that_gives_up_loses_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """One applet, lent: one waiter times out (BUSY), another is cancelled just after it was
    woken; the next waiter still gets the applet, and the pool ends with it idle."""
    monkeypatch.setattr(keymodule, "SESSION_WAIT", 0.05)
    module = KeyModule.software(SELLER, row_of(SELLER), pool=1)

    async def scenario() -> None:
        async with module.session(HOLDER):
            with pytest.raises(Refused) as refused:
                await module.seal(HOLDER, b"", b"", b"")
            assert refused.value.code is ErrorCode.BUSY
            first = asyncio.create_task(module.seal(HOLDER, b"1", b"", b""))
            second = asyncio.create_task(module.seal(ISSUER, b"2", b"", b""))
            await asyncio.sleep(0.01)  # both wait
        first.cancel()  # woken by the give-back, cancelled before it ran
        with pytest.raises(asyncio.CancelledError):
            await first
        assert len(await asyncio.wait_for(second, 1)) > 0
        await asyncio.wait_for(module.seal(DELIVERY, b"3", b"", b""), 0.04)  # idle again

    asyncio.run(scenario())
