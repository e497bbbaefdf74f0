"""End-to-end fixtures: a personalised card's EEPROM file."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.authority import Authority
from host.personalisation import personalise
from terminal.readers import open_reader
from terminal.session import CardSession
from tests.e2e.support import HOLDER, PIN, PUK


@pytest.fixture
def card_file(tmp_path: Path) -> Path:
    """A card personalised for HOLDER (k = 8) by a centre in tmp_path, through an
    in-process reader on its state file."""
    centre = Authority(home=tmp_path / "centre")
    centre.init(k=8)
    path = tmp_path / "card.json"
    serial = centre.manufacture_card(path)
    (x,) = centre.check_new([HOLDER])
    (row,) = centre.rows_for([x])
    reader = open_reader(f"inprocess:{path}")
    try:
        personalise(CardSession(reader), centre.transport_master, HOLDER, row, PIN, PUK)
    finally:
        reader.close()
    centre.register([HOLDER], serial)
    return path
