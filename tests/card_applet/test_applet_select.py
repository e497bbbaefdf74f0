"""SELECT and GET DATA: selection, the FCI, every public data object, and what is never readable.
Cards: conftest.py."""

from __future__ import annotations

import pytest

from card_applet import blom
from card_applet.tlv import parse
from card_applet.vocabulary import AID, Lifecycle
from terminal.session import CardInfo
from tests.card_applet.applet_helpers import (
    AID_HEX,
    ENCIPHER,
    OK,
    P_BYTES,
    fci,
    pso_data,
    public_template,
    unselected_card,
)
from tests.card_applet.conftest import (
    HOLDER,
    SERIAL,
    CardDriver,
    Reply,
    h,
    row_of,
)

# == SELECT ===================================================================================


def test_select_full_aid_returns_fci(card: CardDriver) -> None:
    reply = card.send(f"00 A4 04 00 0A {AID_HEX} 00")
    assert (reply.data, reply.sw) == (fci(public_template()), OK)
    assert len(reply.data) == 0x72


def test_select_fci_parses(card: CardDriver) -> None:
    (outer,) = parse(card.select().data)
    assert outer.tag == 0x6F
    inner = parse(outer.value)
    assert [item.tag for item in inner] == [0x84, 0xA5]
    assert inner[0].value == AID
    info = CardInfo.from_template(inner[1].value)
    assert info == CardInfo(serial=SERIAL, lifecycle=Lifecycle.OPERATIONAL, version=(1, 0),
                            scheme_version=1, prime=blom.P, k=4, pin_tries=3, pin_max=3,
                            puk_tries=3, puk_max=3, atc=0, holder_id=HOLDER)


def test_select_blank_card_fci_has_no_holder(blank: CardDriver) -> None:
    reply = blank.select()
    assert (reply.data, reply.sw) == (fci(public_template(lifecycle=3, k=0, holder=None)), OK)


@pytest.mark.parametrize("length", [5, 6, 9])
def test_select_partial_aid(length: int) -> None:
    card = unselected_card()
    reply = card.cmd(0x00, 0xA4, 0x04, 0x00, AID[:length], 256)
    assert (reply.data, reply.sw) == (fci(public_template()), OK)


def test_select_p2_0c_returns_no_fci() -> None:
    card = unselected_card()
    assert card.send(f"00 A4 04 0C 0A {AID_HEX}") == Reply(b"", OK)
    assert card.send(f"00 A4 04 0C 0A {AID_HEX} 00") == Reply(b"", OK)
    assert card.get_data(0xC2).data == SERIAL


def test_select_without_le_offers_the_fci_by_get_response() -> None:
    card = unselected_card()
    assert card.send(f"00 A4 04 00 0A {AID_HEX}") == Reply(b"", 0x6172)
    assert card.send("00 C0 00 00 72") == Reply(fci(public_template()), OK)


def test_select_last_occurrence(card: CardDriver) -> None:
    assert card.send(f"00 A4 04 0D 0A {AID_HEX}").sw == OK


@pytest.mark.parametrize("p2", ["02", "03"])
def test_select_next_or_previous_occurrence_not_found(card: CardDriver, p2: str) -> None:
    assert card.send(f"00 A4 04 {p2} 0A {AID_HEX} 00").sw == 0x6A82


@pytest.mark.parametrize("data", ["F0 45 50 30", "F0 45 50 30 37 39 31 39 30 31 00",
                                  "A0 00 00 00 03 10 10", "F1 45 50 30 37", "00 00 00 00 00"])
def test_select_unknown_aid(card: CardDriver, data: str) -> None:
    assert card.cmd(0x00, 0xA4, 0x04, 0x00, h(data), 256).sw == 0x6A82


def test_select_without_aid_not_found(card: CardDriver) -> None:
    assert card.send("00 A4 04 00 00").sw == 0x6A82


@pytest.mark.parametrize(("p1", "data", "sw"), [
    (0x00, "12 34", 0x6A82), (0x01, "12 34", 0x6A82), (0x02, "12 34", 0x6A82),
    (0x03, "3F 00", 0x6A87),  # SELECT parent takes no data
    (0x08, "12 34", 0x6A82), (0x09, "12 34", 0x6A82)])
def test_select_by_file_not_found(card: CardDriver, p1: int, data: str, sw: int) -> None:
    assert card.cmd(0x00, 0xA4, p1, 0x00, h(data), 256).sw == sw


@pytest.mark.parametrize(("p1", "p2"), [(0x05, 0x00), (0x04, 0x04), (0x04, 0x08),
                                        (0x04, 0x10), (0x04, 0x80), (0x0C, 0x00)])
def test_select_bad_p1_p2(card: CardDriver, p1: int, p2: int) -> None:
    assert card.cmd(0x00, 0xA4, p1, p2, AID, 256).sw == 0x6A86


def test_failed_select_keeps_the_current_selection(ready_card: CardDriver) -> None:
    assert ready_card.cmd(0x00, 0xA4, 0x04, 0x00, h("A0 00 00 00 03"), 256).sw == 0x6A82
    assert ready_card.send("00 20 00 81").sw == OK  # still verified


def test_select_resets_pin_and_peer(ready_card: CardDriver) -> None:
    assert ready_card.select().sw == OK
    assert ready_card.send("00 20 00 81").sw == 0x63C3
    assert ready_card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6982
    assert ready_card.verify().sw == OK
    assert ready_card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6985


# == GET DATA =================================================================================


@pytest.mark.parametrize(("tag", "value"), [
    (0xC1, HOLDER.encode()),
    (0xC2, SERIAL),
    (0xC3, h("03 03 03 03")),
    (0xC4, h("80 01 01 81 20") + P_BYTES + h("82 02 00 04")),
    (0xC5, h("05")),
    (0xC6, h("00 00 00 00")),
    (0xC7, h("01 00")),
    (0xC0, public_template()),
])
def test_get_data(card: CardDriver, tag: int, value: bytes) -> None:
    reply = card.get_data(tag)
    assert (reply.data, reply.sw) == (value, OK)


@pytest.mark.parametrize(("tag", "value"), [
    (0xC2, SERIAL),
    (0xC3, h("03 03 03 03")),
    (0xC4, h("80 01 01 81 20") + P_BYTES + h("82 02 00 00")),
    (0xC5, h("03")),
    (0xC6, h("00 00 00 00")),
    (0xC7, h("01 00")),
    (0xC0, public_template(lifecycle=3, k=0, holder=None)),
])
def test_get_data_blank_card(blank: CardDriver, tag: int, value: bytes) -> None:
    reply = blank.get_data(tag)
    assert (reply.data, reply.sw) == (value, OK)


def test_get_data_holder_absent_on_blank_card(blank: CardDriver) -> None:
    assert blank.get_data(0xC1).sw == 0x6A88


@pytest.mark.parametrize("tag", [0x0000, 0x00C8, 0x00BF, 0xDF10, 0xDF11, 0xDF12, 0xDF13,
                                 0xDF14, 0x01C1, 0x5F20])
def test_get_data_unknown_or_secret_tag(card: CardDriver, tag: int) -> None:
    assert card.get_data(tag).sw == 0x6A88


def test_get_data_with_data_field(card: CardDriver) -> None:
    assert card.send("00 CA 00 C2 01 00 00").sw == 0x6700


def test_get_data_tries_follow_the_counters(card: CardDriver) -> None:
    assert card.verify("9999").sw == 0x63C2
    assert card.send("00 2C 01 81 08 " + "39" * 8).sw == 0x63C2
    assert card.get_data(0xC3).data == h("02 03 02 03")


def test_the_row_is_never_readable(card: CardDriver) -> None:
    """No tag, in GET DATA or in the FCI, yields the row (write-only, DESIGN.md)."""
    row = blom.row_to_bytes(row_of(HOLDER))
    for p1 in (0x00, 0xDF):
        for p2 in range(256):
            reply = card.cmd(0x00, 0xCA, p1, p2, le=256)
            assert reply.sw in (OK, 0x6A88)
            assert not any(row[i:i + 32] in reply.data for i in range(0, len(row), 32))
    assert not any(row[i:i + 32] in card.select().data for i in range(0, len(row), 32))
