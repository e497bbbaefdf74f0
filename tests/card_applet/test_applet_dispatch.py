"""The dispatcher's checks before any handler: selection, class byte, instruction, APDU format.
Cards: conftest.py."""

from __future__ import annotations

import pytest

from card_applet.vocabulary import AID, Ins
from tests.card_applet.applet_helpers import (
    unselected_card,
)
from tests.card_applet.conftest import (
    CardDriver,
    Reply,
)

# == class, instruction and selection checks ==================================================


def test_commands_need_select() -> None:
    card = unselected_card()
    for apdu in ("00 CA 00 C2 00", "00 20 00 81", "00 20 00 81 08 31 32 33 34 FF FF FF FF",
                 "00 22 41 A4 03 83 01 61", "00 2A 86 80 03 80 01 61 00", "00 84 00 00 08",
                 "00 88 00 00 08 0102030405060708 00", "00 82 00 00 10" + " 00" * 16,
                 "00 24 00 81 10" + " 31" * 16, "00 2C 01 81 08" + " 31" * 8,
                 "80 50 00 00 08 0001020304050607 00", "80 E2 00 00 10" + " 00" * 16,
                 "80 F0 00 05 10" + " 00" * 16):
        assert card.send(apdu).sw == 0x6985, apdu
    assert card.state.pin_tries == 3


@pytest.mark.parametrize("cla", [0xFF, 0x20, 0x3F, 0xA0, 0xB0, 0xE0, 0xFE])
def test_class_not_supported(card: CardDriver, cla: int) -> None:
    assert card.cmd(cla, 0xCA, 0x00, 0xC2, le=256).sw == 0x6E00


@pytest.mark.parametrize("cla", [0x01, 0x02, 0x03, 0x40, 0x60, 0x7F, 0x81, 0x13])
def test_logical_channels_not_supported(card: CardDriver, cla: int) -> None:
    assert card.cmd(cla, 0xCA, 0x00, 0xC2, le=256).sw == 0x6881


@pytest.mark.parametrize("cla", [0x04, 0x08, 0x0C, 0x84, 0x8C, 0x1C])
def test_secure_messaging_not_supported(card: CardDriver, cla: int) -> None:
    assert card.cmd(cla, 0xCA, 0x00, 0xC2, le=256).sw == 0x6882


@pytest.mark.parametrize("ins", [0x00, 0xB2, 0xD6, 0x44, 0x0E, 0x70])
def test_unknown_instruction(card: CardDriver, ins: int) -> None:
    assert card.cmd(0x00, ins, 0x00, 0x00).sw == 0x6D00


@pytest.mark.parametrize("ins", [Ins.SELECT, Ins.GET_DATA, Ins.VERIFY, 0xCB])
def test_inter_industry_instruction_in_proprietary_class(card: CardDriver, ins: int) -> None:
    assert card.cmd(0x80, ins, 0x04, 0x00, AID).sw == 0x6D00


@pytest.mark.parametrize("ins", [Ins.INITIALIZE_UPDATE, Ins.STORE_DATA, Ins.SET_STATUS])
def test_proprietary_instruction_in_inter_industry_class(blank: CardDriver, ins: int) -> None:
    assert blank.cmd(0x00, ins, 0x00, 0x00, bytes(8), 256).sw == 0x6D00


@pytest.mark.parametrize("raw", ["", "00", "00 CA 00", "00 CA 00 C2 05 00"])
def test_malformed_apdu_is_wrong_length(card: CardDriver, raw: str) -> None:
    assert card.send(raw) == Reply(b"", 0x6700)
