"""The transaction through the three parties in-process (asyncio servers on free ports) and
the holder's card on an in-process reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from card_applet.applet import Applet
from card_applet.state import FileStore
from host.authority import Authority
from host.holder import HolderClient
from host.keymodule import KeyModule
from host.personalisation import personalise
from host.softcard import software_card
from terminal.inprocess import InProcessReader
from terminal.session import CardSession
from tests.host.market import (
    EVIL,
    HOLDER,
    ISSUER,
    Market,
    issue_market_rows,
    order,
)

PIN, PUK = "1234", "12345678"


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, dict[str, list[int]]]:
    authority = Authority(tmp_path_factory.mktemp("centre"))
    authority.init(k=8)
    return authority, issue_market_rows(authority)


@pytest.fixture
def holder_card(centre: tuple[Authority, dict[str, list[int]]], tmp_path: Path) -> CardSession:
    authority, _ = centre
    path = tmp_path / "holder.json"
    authority.manufacture_card(path)
    from card_applet import blom

    (row,) = authority.rows_for([blom.x_of(HOLDER)])
    session = CardSession(InProcessReader(Applet(FileStore(path))))
    personalise(session, authority.transport_master, HOLDER, row, PIN, PUK)
    return session


@pytest.fixture
def market(centre: tuple[Authority, dict[str, list[int]]], tmp_path: Path) -> Iterator[Market]:
    authority, rows = centre
    m = Market(authority, rows, tmp_path)
    m.start()
    yield m
    m.stop()


def test_purchase_completes(market: Market, holder_card: CardSession) -> None:
    client = HolderClient(holder_card, PIN, "127.0.0.1", market.ports["seller"])
    outcome = client.buy(order())
    assert outcome.status == "completed", outcome.reason
    assert outcome.amount == 2500 + 2 * 1200
    assert outcome.tracking and outcome.tracking.startswith("TRK-")
    assert outcome.verified == {"issuer", "delivery"}


def test_impersonated_issuer_is_not_confirmed(centre, holder_card, tmp_path: Path) -> None:
    authority, rows = centre
    m = Market(authority, rows, tmp_path)
    # the impersonator holds a genuine row, but for its own identifier
    m.start(issuer_keys=lambda: _claiming(ISSUER, rows[EVIL]))
    try:
        client = HolderClient(holder_card, PIN, "127.0.0.1", m.ports["seller"])
        with pytest.raises(Exception, match="unconfirmed"):
            client.buy(order())
    finally:
        m.stop()


def _claiming(identifier: str, row: list[int]) -> KeyModule:
    return KeyModule(identifier, [software_card(EVIL, row)])
