"""End-to-end fixtures: a personalised card's EEPROM file."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.centre.authority import Authority
from host.centre.personalisation import issue_onto_card
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
    centre.manufacture_card(path)
    reader = open_reader(f"inprocess:{path}")
    try:
        issue_onto_card(centre, CardSession(reader), HOLDER, PIN, PUK)
    finally:
        reader.close()
    return path
