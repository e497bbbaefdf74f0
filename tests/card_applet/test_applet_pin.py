"""VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER: the PIN and PUK, their try counters and
the verification status. Cards: conftest.py."""

from __future__ import annotations

import pytest

from card_applet.vocabulary import encode_pin
from tests.card_applet.applet_helpers import (
    ENCIPHER,
    OK,
    assert_unchanged,
    pso_data,
    snapshot,
)
from tests.card_applet.conftest import (
    PIN_BLOCK,
    PUK_BLOCK,
    CardDriver,
    Reply,
    h,
)

# == VERIFY ===================================================================================


def test_verify_ok(card: CardDriver) -> None:
    assert card.send("00 20 00 81 08 31 32 33 34 FF FF FF FF") == Reply(b"", OK)
    assert card.send("00 20 00 81").sw == OK  # status query once verified
    assert card.state.pin_tries == 3


def test_verify_status_query_reports_tries(card: CardDriver) -> None:
    before = snapshot(card)
    assert card.send("00 20 00 81").sw == 0x63C3
    assert_unchanged(card, before)


def test_verify_wrong_pin_counts_down_then_blocks(card: CardDriver) -> None:
    assert [card.verify(p).sw for p in ("0000", "1111", "4321")] == [0x63C2, 0x63C1, 0x63C0]
    assert card.state.pin_tries == 0
    assert card.verify().sw == 0x6983  # even the right PIN
    assert card.send("00 20 00 81").sw == 0x6983
    assert card.get_data(0xC3).data == h("00 03 03 03")
    assert card.state.pin_tries == 0


def test_verify_ok_restores_the_counter(card: CardDriver) -> None:
    assert card.verify("0000").sw == 0x63C2
    assert card.verify("1111").sw == 0x63C1
    assert card.verify().sw == OK
    assert card.state.pin_tries == 3
    assert card.verify("0000").sw == 0x63C2


def test_wrong_pin_clears_verification(ready_card: CardDriver) -> None:
    assert ready_card.verify("0000").sw == 0x63C2
    assert ready_card.send("00 20 00 81").sw == 0x63C2
    assert ready_card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6982


def test_verify_counter_is_persisted_before_the_comparison(card: CardDriver) -> None:
    """Anti-tearing: one write spends the try before the comparison, one restores it."""
    writes = card.store.writes
    assert card.verify("0000").sw == 0x63C2
    assert card.store.writes == writes + 1
    assert card.verify().sw == OK
    assert card.store.writes == writes + 3


def test_verify_reset_security_status(ready_card: CardDriver) -> None:
    assert ready_card.send("00 20 FF 81") == Reply(b"", OK)
    assert ready_card.send("00 20 00 81").sw == 0x63C3
    assert ready_card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6982
    assert ready_card.state.pin_tries == 3


def test_verify_reset_with_data_is_wrong_length(ready_card: CardDriver) -> None:
    assert ready_card.send("00 20 FF 81 08 31 32 33 34 FF FF FF FF").sw == 0x6700
    assert ready_card.send("00 20 00 81").sw == OK


@pytest.mark.parametrize("data", ["31 32 33 34", "31 32 33 34 FF FF FF", "31" * 9,
                                  "31 32 33 34 FF FF FF FF 00" + " 00" * 7])
def test_verify_bad_length(card: CardDriver, data: str) -> None:
    before = snapshot(card)
    assert card.cmd(0x00, 0x20, 0x00, 0x81, h(data)).sw == 0x6700
    assert_unchanged(card, before)


@pytest.mark.parametrize("block", ["31 32 33 FF FF FF FF FF", "31 32 61 34 FF FF FF FF",
                                   "FF FF FF FF FF FF FF FF", "31 32 33 34 FF 35 FF FF",
                                   "31 32 33 34 00 00 00 00", "20 31 32 33 34 FF FF FF"])
def test_verify_non_digit_block_spends_no_try(card: CardDriver, block: str) -> None:
    before = snapshot(card)
    assert card.cmd(0x00, 0x20, 0x00, 0x81, h(block)).sw == 0x6A80
    assert_unchanged(card, before)


@pytest.mark.parametrize("p2", [0x80, 0x82, 0x01, 0x00])
def test_verify_unknown_reference(card: CardDriver, p2: int) -> None:
    before = snapshot(card)
    assert card.cmd(0x00, 0x20, 0x00, p2, PIN_BLOCK).sw == 0x6A88
    assert_unchanged(card, before)


@pytest.mark.parametrize("p1", [0x01, 0x80, 0xFE])
def test_verify_bad_p1(card: CardDriver, p1: int) -> None:
    assert card.cmd(0x00, 0x20, p1, 0x81, PIN_BLOCK).sw == 0x6A86


def test_verify_eight_digit_pin_differs(card: CardDriver) -> None:
    assert card.verify("12345678").sw == 0x63C2  # the PUK is not the PIN


def test_verify_before_personalisation(blank: CardDriver) -> None:
    before = snapshot(blank)
    assert blank.verify().sw == 0x6985
    assert blank.send("00 20 00 81").sw == 0x6985
    assert blank.send("00 20 FF 81").sw == 0x6985
    assert_unchanged(blank, before)


# == CHANGE REFERENCE DATA ====================================================================


def change(card: CardDriver, old: str, new: str, p1: int = 0, p2: int = 0x81) -> int:
    data = encode_pin(old) + encode_pin(new)
    return card.cmd(0x00, 0x24, p1, p2, data).sw


def test_change_pin(card: CardDriver) -> None:
    assert change(card, "1234", "567890") == OK
    assert card.send("00 20 00 81").sw == OK  # verified by the change
    assert card.verify("1234").sw == 0x63C2
    assert card.verify("567890").sw == OK
    assert card.state.pin_tries == 3


def test_change_pin_wrong_old(card: CardDriver) -> None:
    pin_hash = card.state.pin_hash
    assert change(card, "0000", "5678") == 0x63C2
    assert card.state.pin_hash == pin_hash
    assert card.state.pin_tries == 2
    assert card.verify().sw == OK


def test_change_pin_wrong_old_clears_verification(ready_card: CardDriver) -> None:
    assert change(ready_card, "0000", "5678") == 0x63C2
    assert ready_card.send("00 20 00 81").sw == 0x63C2


def test_change_pin_when_blocked(card: CardDriver) -> None:
    for _ in range(3):
        card.verify("0000")
    assert change(card, "1234", "5678") == 0x6983
    assert card.state.pin_tries == 0


@pytest.mark.parametrize("data", ["31 32 33 34 FF FF FF FF", "31 32 33 34 FF FF FF FF 35",
                                  "31" * 17, ""])
def test_change_pin_bad_length(card: CardDriver, data: str) -> None:
    before = snapshot(card)
    assert card.cmd(0x00, 0x24, 0x00, 0x81, h(data)).sw == 0x6700
    assert_unchanged(card, before)


@pytest.mark.parametrize("data", ["31 32 33 34 FF FF FF FF 41 42 43 44 FF FF FF FF",
                                  "31 32 33 FF FF FF FF FF 35 36 37 38 FF FF FF FF"])
def test_change_pin_bad_block(card: CardDriver, data: str) -> None:
    before = snapshot(card)
    assert card.cmd(0x00, 0x24, 0x00, 0x81, h(data)).sw == 0x6A80
    assert_unchanged(card, before)


def test_change_pin_bad_p1_p2(card: CardDriver) -> None:
    assert change(card, "1234", "5678", p1=0x01) == 0x6A86
    assert change(card, "1234", "5678", p2=0x80) == 0x6A88
    assert card.verify().sw == OK


def test_change_pin_before_personalisation(blank: CardDriver) -> None:
    assert change(blank, "1234", "5678") == 0x6985


# == RESET RETRY COUNTER ======================================================================


def block_pin(card: CardDriver) -> None:
    assert [card.verify("0000").sw for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]


def unblock(card: CardDriver, puk: str, new: str | None = None, p1: int | None = None) -> int:
    data = encode_pin(puk) + (encode_pin(new) if new else b"")
    return card.cmd(0x00, 0x2C, (0x00 if new else 0x01) if p1 is None else p1, 0x81, data).sw


def test_unblock_with_new_pin(card: CardDriver) -> None:
    block_pin(card)
    assert unblock(card, "12345678", "8642") == OK
    assert (card.state.pin_tries, card.state.puk_tries) == (3, 3)
    assert card.send("00 20 00 81").sw == 0x63C3
    assert card.verify("1234").sw == 0x63C2
    assert card.verify("8642").sw == OK


def test_unblock_keeping_the_pin(card: CardDriver) -> None:
    block_pin(card)
    assert unblock(card, "12345678") == OK
    assert card.state.pin_tries == 3
    assert card.verify("1234").sw == OK


def test_unblock_wrong_puk_counts_down_then_blocks(card: CardDriver) -> None:
    block_pin(card)
    assert [unblock(card, p) for p in ("00000000", "1234", "87654321")] == [
        0x63C2, 0x63C1, 0x63C0]
    assert card.state.puk_tries == 0
    assert unblock(card, "12345678") == 0x6983
    assert unblock(card, "12345678", "1111") == 0x6983
    assert card.state.pin_tries == 0
    assert card.get_data(0xC3).data == h("00 03 00 03")


def test_right_puk_restores_the_puk_counter(card: CardDriver) -> None:
    assert unblock(card, "00000000") == 0x63C2
    assert unblock(card, "12345678") == OK
    assert card.state.puk_tries == 3


def test_unblock_clears_verification(ready_card: CardDriver) -> None:
    assert unblock(ready_card, "12345678") == OK
    assert ready_card.send("00 20 00 81").sw == 0x63C3


@pytest.mark.parametrize(("p1", "data"), [(0x00, "31" * 8), (0x01, "31" * 16),
                                          (0x00, "31" * 17), (0x01, "")])
def test_unblock_bad_length(card: CardDriver, p1: int, data: str) -> None:
    before = snapshot(card)
    assert card.cmd(0x00, 0x2C, p1, 0x81, h(data)).sw == 0x6700
    assert_unchanged(card, before)


@pytest.mark.parametrize(("p1", "data"), [
    (0x01, "31 32 33 34 35 36 37 41"),
    (0x00, "31 32 33 34 35 36 37 38 31 32 33 FF FF FF FF FF"),
])
def test_unblock_bad_block(card: CardDriver, p1: int, data: str) -> None:
    before = snapshot(card)
    assert card.cmd(0x00, 0x2C, p1, 0x81, h(data)).sw == 0x6A80
    assert_unchanged(card, before)


@pytest.mark.parametrize(("p1", "p2", "sw"), [(0x02, 0x81, 0x6A86), (0x03, 0x81, 0x6A86),
                                              (0x01, 0x80, 0x6A88), (0x01, 0x82, 0x6A88)])
def test_unblock_bad_p1_p2(card: CardDriver, p1: int, p2: int, sw: int) -> None:
    assert card.cmd(0x00, 0x2C, p1, p2, PUK_BLOCK).sw == sw


def test_unblock_before_personalisation(blank: CardDriver) -> None:
    assert unblock(blank, "12345678") == 0x6985
