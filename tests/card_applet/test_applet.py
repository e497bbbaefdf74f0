"""Every applet command, success and failure, with exact status words and exact bytes.

Cards come from conftest: `blank` (personalisation state), `card` (Alice, personalised with
her row from the vectors, selected, PIN not verified), `ready_card` (PIN verified, seller as
peer) and `peer` (the seller's software card with Alice as its peer).
"""

from __future__ import annotations

import pytest

from card_applet import blom, keys
from card_applet import pin as pin_block
from card_applet.applet import AID, MAX_K, Applet, Ins, PersoObject, Pso
from card_applet.state import Lifecycle, MemoryStore
from card_applet.tlv import parse, tlv
from host.centre.personalisation import PersoChannel, personalise
from host.errors import PersonalisationError
from terminal.errors import AuthenticationFailedError
from terminal.errors import IntegrityError as CardIntegrityError
from terminal.inprocess import InProcessReader
from terminal.session import CardInfo, CardSession
from tests.card_applet.conftest import (
    CARD_AUTH_KEY,
    DELIVERY,
    HOLDER,
    ISSUER,
    PIN,
    PIN_BLOCK,
    PUK,
    PUK_BLOCK,
    SELLER,
    SERIAL,
    TRANSPORT_MASTER,
    CardDriver,
    PersoHost,
    RecordingReader,
    Reply,
    blank_state,
    driver_for,
    h,
    mse_data,
    pair_key_of,
    personalised_state,
    row_of,
)

OK = 0x9000
P_BYTES = (2**255 - 19).to_bytes(32, "big")
AID_HEX = "F0 45 50 30 37 39 31 39 30 31"
ENCIPHER, DECIPHER = int(Pso.ENCIPHER), int(Pso.DECIPHER)


def public_template(*, lifecycle: int = 5, k: int = 4, tries: str = "03 03 03 03",
                    atc: int = 0, holder: bytes | None = HOLDER.encode()) -> bytes:
    """The C0 template as the card must build it: C7 C4 C5 C2 C3 C6 [C1]."""
    out = (h("C7 02 01 00")
           + h("C4 29 80 01 01 81 20") + P_BYTES + h("82 02") + k.to_bytes(2, "big")
           + h("C5 01") + bytes((lifecycle,))
           + h("C2 08") + SERIAL
           + h("C3 04") + h(tries)
           + h("C6 04") + atc.to_bytes(4, "big"))
    if holder is not None:
        out += bytes((0xC1, len(holder))) + holder
    return out


def fci(template: bytes) -> bytes:
    return (bytes((0x6F, 12 + 2 + len(template))) + h(f"84 0A {AID_HEX}")
            + bytes((0xA5, len(template))) + template)


def pso_data(main_tag: int, value: bytes, aad: bytes = b"", context: bytes = b"") -> bytes:
    data = tlv(main_tag, value)
    if aad:
        data += tlv(0x81, aad)
    if context:
        data += tlv(0x82, context)
    return data


def encipher(card: CardDriver, plain: bytes, aad: bytes = b"", context: bytes = b"") -> bytes:
    reply = card.pso(ENCIPHER, pso_data(0x80, plain, aad, context))
    assert reply.sw == OK, f"{reply.sw:04X}"
    return reply.data


def open_as_seller(box: bytes, aad: bytes = b"", context: bytes = b"") -> tuple[int, bytes]:
    """Open a holder -> seller box with the vectors' pair key, independently of any card."""
    key = keys.seal_key(pair_key_of(HOLDER, SELLER), HOLDER.encode(), SELLER.encode(), context)
    return keys.open_sealed(key, box, aad)


def seal_as_seller(plain: bytes, aad: bytes = b"", context: bytes = b"", atc: int = 7) -> bytes:
    key = keys.seal_key(pair_key_of(HOLDER, SELLER), SELLER.encode(), HOLDER.encode(), context)
    return keys.seal(key, atc, plain, aad)


def unselected_card() -> CardDriver:
    return driver_for(personalised_state())


def assert_unchanged(card: CardDriver, before: tuple) -> None:
    assert (card.state, card.store.writes) == before


def snapshot(card: CardDriver) -> tuple:
    return card.state, card.store.writes


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
    data = pin_block.encode_pin(old) + pin_block.encode_pin(new)
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
    data = pin_block.encode_pin(puk) + (pin_block.encode_pin(new) if new else b"")
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


# == MANAGE SECURITY ENVIRONMENT ==============================================================


@pytest.mark.parametrize("p1", [0x41, 0x81, 0xC1, 0xF1])
@pytest.mark.parametrize("p2", [0xA4, 0xB8])
def test_mse_set_peer(card: CardDriver, p1: int, p2: int) -> None:
    before = snapshot(card)
    assert card.cmd(0x00, 0x22, p1, p2, mse_data(SELLER)) == Reply(b"", OK)
    assert_unchanged(card, before)


@pytest.mark.parametrize(("p1", "p2"), [(0x01, 0xA4), (0x42, 0xA4), (0xF3, 0xA4), (0x41, 0xB6),
                                        (0x41, 0xAA), (0x41, 0x00)])
def test_mse_bad_p1_p2(card: CardDriver, p1: int, p2: int) -> None:
    assert card.cmd(0x00, 0x22, p1, p2, mse_data(SELLER)).sw == 0x6A86


@pytest.mark.parametrize("data", [
    "", "83", "83 05 61 62 63", "83 81", "84 03 61 62 63", "83 01 61 83 01 62",
    "83 01 61 84 01 62", "83 00", "83 01 FF", "83 02 C3 28", "DF 11 01 61",
])
def test_mse_bad_data(card: CardDriver, data: str) -> None:
    assert card.cmd(0x00, 0x22, 0x41, 0xA4, h(data)).sw == 0x6A80


def test_mse_identifier_lengths(card: CardDriver) -> None:
    assert card.set_peer("s" * 64).sw == OK
    assert card.set_peer("s" * 65).sw == 0x6A80


def test_mse_own_identifier_refused(card: CardDriver) -> None:
    assert card.set_peer(HOLDER).sw == 0x6A80


def test_failed_mse_keeps_the_previous_peer(ready_card: CardDriver) -> None:
    assert ready_card.set_peer(HOLDER).sw == 0x6A80
    box = encipher(ready_card, b"still for the seller")
    assert open_as_seller(box) == (1, b"still for the seller")


def test_mse_before_personalisation(blank: CardDriver) -> None:
    assert blank.set_peer(SELLER).sw == 0x6985


# == PERFORM SECURITY OPERATION ===============================================================


def test_encipher_box_format_and_key(ready_card: CardDriver) -> None:
    box = encipher(ready_card, b"order part", b"header", b"order-42")
    assert len(box) == 1 + 4 + 12 + len(b"order part") + 16
    assert box[:5] == h("01 00 00 00 01")
    assert open_as_seller(box, b"header", b"order-42") == (1, b"order part")


def test_encipher_needs_the_pin(card: CardDriver) -> None:
    assert card.set_peer(SELLER).sw == OK
    before = snapshot(card)
    assert card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6982
    assert card.pso(DECIPHER, pso_data(0x86, seal_as_seller(b"x"))).sw == 0x6982
    assert_unchanged(card, before)


def test_encipher_needs_a_peer(card: CardDriver) -> None:
    assert card.verify().sw == OK
    before = snapshot(card)
    assert card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6985
    assert card.pso(DECIPHER, pso_data(0x86, seal_as_seller(b"x"))).sw == 0x6985
    assert_unchanged(card, before)


def test_pso_before_personalisation(blank: CardDriver) -> None:
    assert blank.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6985


@pytest.mark.parametrize("p1p2", [0x9E9A, 0x0000, 0x0086, 0x8681, 0x8080, 0x8686])
def test_pso_bad_p1_p2(ready_card: CardDriver, p1p2: int) -> None:
    before = snapshot(ready_card)
    assert ready_card.pso(p1p2, pso_data(0x80, b"x")).sw == 0x6A86
    assert_unchanged(ready_card, before)


def test_pso_bad_p1_p2_checked_first(card: CardDriver) -> None:
    assert card.pso(0x9E9A, pso_data(0x80, b"x")).sw == 0x6A86


@pytest.mark.parametrize(("operation", "data"), [
    (ENCIPHER, ""),
    (ENCIPHER, "81 02 AA BB"),
    (ENCIPHER, "86 02 AA BB"),
    (ENCIPHER, "80 01 AA 80 01 BB"),
    (ENCIPHER, "80 01 AA 83 00"),
    (ENCIPHER, "80 05 AA"),
    (ENCIPHER, "80 80"),
    (DECIPHER, ""),
    (DECIPHER, "80 02 AA BB"),
    (DECIPHER, "86 00 86 00"),
])
def test_pso_bad_data(ready_card: CardDriver, operation: int, data: str) -> None:
    before = snapshot(ready_card)
    assert ready_card.pso(operation, h(data)).sw == 0x6A80
    assert_unchanged(ready_card, before)


def test_pso_context_limit(ready_card: CardDriver) -> None:
    before = snapshot(ready_card)
    assert ready_card.pso(ENCIPHER, pso_data(0x80, b"x", context=bytes(65))).sw == 0x6A80
    assert_unchanged(ready_card, before)
    box = encipher(ready_card, b"x", context=bytes(64))
    assert open_as_seller(box, context=bytes(64)) == (1, b"x")


def test_encipher_empty_plaintext(ready_card: CardDriver) -> None:
    box = encipher(ready_card, b"")
    assert len(box) == 33
    assert open_as_seller(box) == (1, b"")


def test_atc_increments_by_one_per_encipher(ready_card: CardDriver) -> None:
    for expected in range(1, 6):
        box = encipher(ready_card, b"part %d" % expected)
        assert box[1:5] == expected.to_bytes(4, "big")
        assert ready_card.state.atc == expected
        assert ready_card.get_data(0xC6).data == expected.to_bytes(4, "big")
        assert open_as_seller(box) == (expected, b"part %d" % expected)


def test_atc_untouched_by_failures_and_decipher(ready_card: CardDriver) -> None:
    encipher(ready_card, b"one")
    ready_card.pso(ENCIPHER, h("81 00"))
    ready_card.pso(DECIPHER, pso_data(0x86, seal_as_seller(b"in")))
    ready_card.pso(DECIPHER, pso_data(0x86, bytes(40)))
    assert encipher(ready_card, b"two")[1:5] == h("00 00 00 02")


def test_atc_exhausted() -> None:
    card = driver_for(personalised_state().with_(atc=0xFFFF_FFFE))
    for apdu in (card.select(), card.verify(), card.set_peer(SELLER)):
        assert apdu.sw == OK
    assert encipher(card, b"last")[1:5] == h("FF FF FF FF")
    before = snapshot(card)
    assert card.pso(ENCIPHER, pso_data(0x80, b"one more")).sw == 0x6985
    assert_unchanged(card, before)


def test_nonces_are_fresh(ready_card: CardDriver) -> None:
    first, second = encipher(ready_card, b"same"), encipher(ready_card, b"same")
    assert first[5:17] != second[5:17]
    assert first[17:] != second[17:]


def test_decipher(ready_card: CardDriver) -> None:
    box = seal_as_seller(b"authorised", b"hdr", b"ctx", atc=99)
    before = snapshot(ready_card)
    reply = ready_card.pso(DECIPHER, pso_data(0x86, box, b"hdr", b"ctx"))
    assert (reply.data, reply.sw) == (b"authorised", OK)
    assert_unchanged(ready_card, before)


@pytest.mark.parametrize("index", [1, 4, 5, 16, 17, 20, -16, -1])
def test_decipher_tampered_box(ready_card: CardDriver, index: int) -> None:
    box = bytearray(seal_as_seller(b"order 1234"))
    box[index] ^= 0x01
    assert ready_card.pso(DECIPHER, pso_data(0x86, bytes(box))).sw == 0x6988


def test_decipher_wrong_aad(ready_card: CardDriver) -> None:
    box = seal_as_seller(b"order", b"header")
    assert ready_card.pso(DECIPHER, pso_data(0x86, box, b"headeR")).sw == 0x6988
    assert ready_card.pso(DECIPHER, pso_data(0x86, box)).sw == 0x6988


def test_decipher_wrong_context(ready_card: CardDriver) -> None:
    box = seal_as_seller(b"order", context=b"order-1")
    assert ready_card.pso(DECIPHER, pso_data(0x86, box, context=b"order-2")).sw == 0x6988
    assert ready_card.pso(DECIPHER, pso_data(0x86, box)).sw == 0x6988


@pytest.mark.parametrize("size", [0, 1, 32])
def test_decipher_truncated_box(ready_card: CardDriver, size: int) -> None:
    box = seal_as_seller(b"")
    assert len(box) == 33
    assert ready_card.pso(DECIPHER, pso_data(0x86, box[:size])).sw == 0x6A80


def test_decipher_unknown_box_version(ready_card: CardDriver) -> None:
    box = b"\x02" + seal_as_seller(b"order")[1:]
    assert ready_card.pso(DECIPHER, pso_data(0x86, box)).sw == 0x6A80


def test_decipher_refuses_own_box_reflected(ready_card: CardDriver) -> None:
    """A holder -> seller box replayed to the holder as if seller -> holder: the direction is
    in the key, so it does not open."""
    box = encipher(ready_card, b"reflect me")
    assert ready_card.pso(DECIPHER, pso_data(0x86, box)).sw == 0x6988


def test_box_for_another_peer_does_not_open(ready_card: CardDriver) -> None:
    assert ready_card.set_peer(ISSUER).sw == OK
    box = encipher(ready_card, b"card number")
    with pytest.raises(keys.IntegrityError):
        open_as_seller(box)
    key = keys.seal_key(pair_key_of(HOLDER, ISSUER), HOLDER.encode(), ISSUER.encode(), b"")
    assert keys.open_sealed(key, box, b"") == (1, b"card number")


def test_seller_box_does_not_open_for_delivery_peer(ready_card: CardDriver) -> None:
    assert ready_card.set_peer(DELIVERY).sw == OK
    assert ready_card.pso(DECIPHER, pso_data(0x86, seal_as_seller(b"x"))).sw == 0x6988


def test_peer_opens_what_the_card_sealed(ready_card: CardDriver, peer: CardSession) -> None:
    box = encipher(ready_card, b"items and amount", b"envelope header", b"order-7")
    assert peer.decrypt(box, b"envelope header", b"order-7") == b"items and amount"


def test_card_opens_what_the_peer_sealed(ready_card: CardDriver, peer: CardSession) -> None:
    box = peer.encrypt(b"confirmation", b"hdr", b"order-7")
    reply = ready_card.pso(DECIPHER, pso_data(0x86, box, b"hdr", b"order-7"))
    assert (reply.data, reply.sw) == (b"confirmation", OK)


def test_peer_cannot_open_its_own_box_as_from_the_holder(peer: CardSession) -> None:
    box = peer.encrypt(b"reflect me")
    with pytest.raises(CardIntegrityError) as caught:
        peer.decrypt(box)
    assert caught.value.sw == 0x6988


# == GET CHALLENGE ============================================================================


@pytest.mark.parametrize("le", [8, 9, 16, 100, 255, 256])
def test_get_challenge(card: CardDriver, le: int) -> None:
    reply = card.cmd(0x00, 0x84, 0x00, 0x00, le=le)
    assert (len(reply.data), reply.sw) == (le, OK)


def test_get_challenge_extended_le_caps_at_256(card: CardDriver) -> None:
    reply = card.send("00 84 00 00 00 03 E8")
    assert (len(reply.data), reply.sw) == (256, OK)


def test_challenges_are_fresh(card: CardDriver) -> None:
    assert card.send("00 84 00 00 10").data != card.send("00 84 00 00 10").data


@pytest.mark.parametrize("raw", ["00 84 00 00", "00 84 00 00 01", "00 84 00 00 07",
                                 "00 84 00 00 01 00 08"])
def test_get_challenge_wrong_length(card: CardDriver, raw: str) -> None:
    assert card.send(raw).sw == 0x6700


@pytest.mark.parametrize("raw", ["00 84 01 00 08", "00 84 00 01 08"])
def test_get_challenge_bad_p1_p2(card: CardDriver, raw: str) -> None:
    assert card.send(raw).sw == 0x6A86


def test_get_challenge_on_blank_card(blank: CardDriver) -> None:
    assert len(blank.send("00 84 00 00 08").data) == 8


# == INTERNAL / EXTERNAL AUTHENTICATE =========================================================


def internal_auth(card: CardDriver, challenge: bytes) -> bytes:
    reply = card.cmd(0x00, 0x88, 0x00, 0x00, challenge, 256)
    assert reply.sw == OK, f"{reply.sw:04X}"
    return reply.data


def external_auth(card: CardDriver, response: bytes) -> int:
    reply = card.cmd(0x00, 0x82, 0x00, 0x00, response)
    assert reply.data == b""
    return reply.sw


def card_challenge(card: CardDriver, length: int = 16) -> bytes:
    return card.ok(0x00, 0x84, 0x00, 0x00, le=length)


def confirm(sender: str, receiver: str, challenge: bytes) -> bytes:
    key = keys.confirm_key(pair_key_of(sender, receiver), sender.encode(), receiver.encode())
    return keys.confirm_mac(key, challenge)


def test_internal_authenticate_exact_answer(ready_card: CardDriver) -> None:
    challenge = bytes(range(16))
    assert internal_auth(ready_card, challenge) == confirm(HOLDER, SELLER, challenge)


def test_card_proves_itself_to_the_peer(ready_card: CardDriver, peer: CardSession) -> None:
    challenge = peer.get_challenge(16)
    peer.external_authenticate(internal_auth(ready_card, challenge))


def test_peer_proves_itself_to_the_card(ready_card: CardDriver, peer: CardSession) -> None:
    challenge = card_challenge(ready_card)
    response = peer.internal_authenticate(challenge)
    assert response == confirm(SELLER, HOLDER, challenge)
    assert external_auth(ready_card, response) == OK


def test_external_authenticate_without_pin(card: CardDriver, peer: CardSession) -> None:
    assert card.set_peer(SELLER).sw == OK
    challenge = card_challenge(card, 8)
    assert external_auth(card, peer.internal_authenticate(challenge)) == OK


def test_external_authenticate_wrong_response(ready_card: CardDriver) -> None:
    challenge = card_challenge(ready_card)
    wrong = bytearray(confirm(SELLER, HOLDER, challenge))
    wrong[0] ^= 0x80
    assert external_auth(ready_card, bytes(wrong)) == 0x6300


def test_challenge_is_single_use(ready_card: CardDriver, peer: CardSession) -> None:
    response = peer.internal_authenticate(card_challenge(ready_card))
    assert external_auth(ready_card, response) == OK
    assert external_auth(ready_card, response) == 0x6985


def test_challenge_is_spent_by_a_failure(ready_card: CardDriver, peer: CardSession) -> None:
    challenge = card_challenge(ready_card)
    assert external_auth(ready_card, bytes(16)) == 0x6300
    assert external_auth(ready_card, peer.internal_authenticate(challenge)) == 0x6985


def test_card_refuses_its_own_answer_reflected(ready_card: CardDriver) -> None:
    challenge = card_challenge(ready_card)
    assert external_auth(ready_card, internal_auth(ready_card, challenge)) == 0x6300


def test_peer_refuses_its_own_answer_reflected(peer: CardSession) -> None:
    challenge = peer.get_challenge(16)
    with pytest.raises(AuthenticationFailedError) as caught:
        peer.external_authenticate(peer.internal_authenticate(challenge))
    assert caught.value.sw == 0x6300


def test_answer_for_another_peer_fails(ready_card: CardDriver, peer: CardSession) -> None:
    assert ready_card.set_peer(ISSUER).sw == OK
    challenge = peer.get_challenge(16)
    with pytest.raises(AuthenticationFailedError):
        peer.external_authenticate(internal_auth(ready_card, challenge))


def test_mse_discards_the_challenge(ready_card: CardDriver, peer: CardSession) -> None:
    challenge = card_challenge(ready_card)
    assert ready_card.set_peer(SELLER).sw == OK
    assert external_auth(ready_card, peer.internal_authenticate(challenge)) == 0x6985


def test_external_authenticate_without_challenge(ready_card: CardDriver) -> None:
    assert external_auth(ready_card, bytes(16)) == 0x6985


def test_external_authenticate_without_peer(card: CardDriver) -> None:
    card_challenge(card)
    assert external_auth(card, bytes(16)) == 0x6985


@pytest.mark.parametrize("size", [0, 8, 15, 17, 32])
def test_external_authenticate_wrong_length(ready_card: CardDriver, size: int) -> None:
    card_challenge(ready_card)
    assert external_auth(ready_card, bytes(size)) == 0x6700


def test_external_authenticate_bad_p1_p2(ready_card: CardDriver) -> None:
    assert ready_card.cmd(0x00, 0x82, 0x00, 0x01, bytes(16)).sw == 0x6A86


def test_external_authenticate_before_personalisation(blank: CardDriver) -> None:
    card_challenge(blank)
    assert external_auth(blank, bytes(16)) == 0x6985


@pytest.mark.parametrize("size", [8, 64])
def test_internal_authenticate_challenge_sizes(ready_card: CardDriver, size: int) -> None:
    challenge = bytes(range(size))
    assert internal_auth(ready_card, challenge) == confirm(HOLDER, SELLER, challenge)


@pytest.mark.parametrize("size", [0, 7, 65])
def test_internal_authenticate_wrong_length(ready_card: CardDriver, size: int) -> None:
    assert ready_card.cmd(0x00, 0x88, 0x00, 0x00, bytes(size), 256).sw == 0x6700


def test_internal_authenticate_needs_pin_then_peer(card: CardDriver) -> None:
    assert card.cmd(0x00, 0x88, 0x00, 0x00, bytes(8), 256).sw == 0x6982
    assert card.verify().sw == OK
    assert card.cmd(0x00, 0x88, 0x00, 0x00, bytes(8), 256).sw == 0x6985


def test_internal_authenticate_bad_p1_p2(ready_card: CardDriver) -> None:
    assert ready_card.cmd(0x00, 0x88, 0x01, 0x00, bytes(8), 256).sw == 0x6A86


def test_internal_authenticate_before_personalisation(blank: CardDriver) -> None:
    assert blank.cmd(0x00, 0x88, 0x00, 0x00, bytes(8), 256).sw == 0x6985


# == personalisation ==========================================================================


def test_personalisation_result(blank: CardDriver) -> None:
    host = PersoHost(blank)
    assert host.serial == SERIAL
    host.load_all()
    assert host.lock() == Reply(b"", OK)
    state = blank.state
    assert (state.lifecycle, state.holder_id, state.row) == (
        Lifecycle.OPERATIONAL, HOLDER.encode(), blom.row_to_bytes(row_of(HOLDER)))
    assert (state.pin_tries, state.puk_tries, state.atc) == (3, 3, 0)
    assert state.pin_hash == pin_block.pin_hash(state.pin_salt, PIN_BLOCK)
    assert state.puk_hash == pin_block.pin_hash(state.pin_salt, PUK_BLOCK)
    assert state.card_auth_key == CARD_AUTH_KEY
    assert blank.get_data(0xC0).data == public_template()


def test_initialize_update_answer(blank: CardDriver) -> None:
    host_challenge = bytes.fromhex("1122334455667788")
    answer = blank.ok(0x80, 0x50, 0x00, 0x00, host_challenge, 256)
    serial, challenge, cryptogram = answer[:8], answer[8:16], answer[16:]
    transport_key = keys.diversify_transport_key(TRANSPORT_MASTER, SERIAL)
    session = keys.perso_session_key(transport_key, host_challenge, challenge)
    assert (len(answer), serial) == (32, SERIAL)
    assert cryptogram == keys.card_cryptogram(session, host_challenge, challenge)


def test_card_of_another_centre_is_detected(blank: CardDriver) -> None:
    session = CardSession(InProcessReader(blank.applet))
    assert session.select().lifecycle == Lifecycle.PERSONALISATION
    with pytest.raises(PersonalisationError, match="card cryptogram does not verify"):
        PersoChannel(session, transport_master=bytes(32))
    assert blank.state.lifecycle == Lifecycle.PERSONALISATION


@pytest.mark.parametrize("raw", ["80 50 00 00 07 01020304050607 00",
                                 "80 50 00 00 09 010203040506070809 00", "80 50 00 00 00"])
def test_initialize_update_wrong_length(blank: CardDriver, raw: str) -> None:
    assert blank.send(raw).sw == 0x6700


def test_initialize_update_bad_p1_p2(blank: CardDriver) -> None:
    assert blank.send("80 50 01 00 08 0102030405060708 00").sw == 0x6A86


def test_store_data_without_initialize_update(blank: CardDriver) -> None:
    before = snapshot(blank)
    payload = tlv(PersoObject.HOLDER_ID, HOLDER.encode())
    assert blank.cmd(0x80, 0xE2, 0x00, 0x00, payload + bytes(16)).sw == 0x6982
    assert_unchanged(blank, before)


def test_store_data_bad_mac_drops_the_session(blank: CardDriver) -> None:
    host = PersoHost(blank)
    good = host.apdu(Ins.STORE_DATA, 0, 0, tlv(PersoObject.HOLDER_ID, HOLDER.encode()))
    bad = good[:-1] + bytes((good[-1] ^ 0x01,))
    before = snapshot(blank)
    assert blank.send(bad).sw == 0x6982
    assert blank.send(good).sw == 0x6982  # the session is gone: even the right MAC fails
    assert_unchanged(blank, before)


def test_store_data_replayed(blank: CardDriver) -> None:
    host = PersoHost(blank)
    apdu = host.apdu(Ins.STORE_DATA, 0, 0, tlv(PersoObject.PIN, PIN_BLOCK))
    assert blank.send(apdu).sw == OK
    after_first = snapshot(blank)
    assert blank.send(apdu).sw == 0x6982
    assert_unchanged(blank, after_first)
    assert host.store(PersoObject.PUK, PUK_BLOCK).sw == 0x6982  # session dropped


def test_store_data_replayed_across_sessions(blank: CardDriver) -> None:
    first = PersoHost(blank)
    apdu = first.apdu(Ins.STORE_DATA, 0, 0, tlv(PersoObject.PIN, PIN_BLOCK))
    PersoHost(blank, host_challenge=bytes(range(8)))
    assert blank.send(apdu).sw == 0x6982


def test_store_data_mac_bound_to_the_header(blank: CardDriver) -> None:
    host = PersoHost(blank)
    apdu = bytearray(host.apdu(Ins.STORE_DATA, 0, 0, tlv(PersoObject.PIN, PIN_BLOCK)))
    apdu[1] = Ins.SET_STATUS
    apdu[3] = 0x05
    assert blank.send(bytes(apdu)).sw == 0x6982


def test_select_ends_the_perso_session(blank: CardDriver) -> None:
    host = PersoHost(blank)
    assert blank.select().sw == OK
    assert host.store(PersoObject.PIN, PIN_BLOCK).sw == 0x6982


def test_store_data_shorter_than_a_mac(blank: CardDriver) -> None:
    PersoHost(blank)
    assert blank.cmd(0x80, 0xE2, 0x00, 0x00, bytes(15)).sw == 0x6700


def test_store_data_bad_p1_p2(blank: CardDriver) -> None:
    host = PersoHost(blank)
    assert blank.send(host.apdu(Ins.STORE_DATA, 0x80, 0x00, tlv(0xDF12, PIN_BLOCK))).sw == 0x6A86


@pytest.mark.parametrize("missing", list(PersoObject))
def test_set_status_before_all_objects(blank: CardDriver, missing: PersoObject) -> None:
    host = PersoHost(blank)
    values = {PersoObject.HOLDER_ID: HOLDER.encode(),
              PersoObject.ROW: blom.row_to_bytes(row_of(HOLDER)),
              PersoObject.PIN: PIN_BLOCK, PersoObject.PUK: PUK_BLOCK,
              PersoObject.CARD_AUTH_KEY: CARD_AUTH_KEY}
    for tag, value in values.items():
        if tag != missing:
            assert host.store(tag, value).sw == OK
    before = snapshot(blank)
    assert host.lock().sw == 0x6985
    assert_unchanged(blank, before)
    assert host.store(missing, values[missing]).sw == OK  # the session survives
    assert host.lock().sw == OK


def test_set_status_with_data(blank: CardDriver) -> None:
    host = PersoHost(blank)
    host.load_all()
    assert blank.send(host.apdu(Ins.SET_STATUS, 0x00, 0x05, b"\x05")).sw == 0x6700
    assert blank.state.lifecycle == Lifecycle.PERSONALISATION


@pytest.mark.parametrize(("p1", "p2"), [(0x00, 0x03), (0x00, 0x07), (0x80, 0x05)])
def test_set_status_bad_p1_p2(blank: CardDriver, p1: int, p2: int) -> None:
    host = PersoHost(blank)
    host.load_all()
    assert blank.send(host.apdu(Ins.SET_STATUS, p1, p2, b"")).sw == 0x6A86
    assert blank.state.lifecycle == Lifecycle.PERSONALISATION


def test_set_status_without_session(blank: CardDriver) -> None:
    assert blank.send("80 F0 00 05 10" + " 00" * 16).sw == 0x6982


def test_commands_after_lock(card: CardDriver) -> None:
    before = snapshot(card)
    for raw in ("80 50 00 00 08 0102030405060708 00", "80 E2 00 00 13 DF 12 00" + " 00" * 16,
                "80 F0 00 05 10" + " 00" * 16):
        assert card.send(raw).sw == 0x6985, raw
    assert_unchanged(card, before)


def test_lock_is_final(blank: CardDriver) -> None:
    host = PersoHost(blank)
    host.load_all()
    assert host.lock().sw == OK
    assert host.store(PersoObject.PIN, pin_block.encode_pin("0000")).sw == 0x6985
    assert host.lock().sw == 0x6985
    assert blank.send("80 50 00 00 08 0102030405060708 00").sw == 0x6985


def test_objects_may_be_rewritten_before_lock(blank: CardDriver) -> None:
    host = PersoHost(blank)
    host.load_all()
    assert host.store(PersoObject.PIN, pin_block.encode_pin("9999")).sw == OK
    assert host.lock().sw == OK
    assert blank.verify("9999").sw == OK


def row_bytes_with(first: int, k: int = 4) -> bytes:
    return first.to_bytes(32, "big") + blom.row_to_bytes(row_of(HOLDER)[1:k])


@pytest.mark.parametrize("value", [
    row_bytes_with(blom.P), row_bytes_with(blom.P + 1), row_bytes_with(2**256 - 1),
    b"", bytes(31), bytes(33), bytes(4 * 32 - 1), bytes(4 * 32 + 1),
    bytes(32 * (MAX_K + 1)),
], ids=["p", "p+1", "2^256-1", "empty", "31", "33", "127", "129", "k>MAX_K"])
def test_store_row_rejected(blank: CardDriver, value: bytes) -> None:
    host = PersoHost(blank)
    before = snapshot(blank)
    assert host.store(PersoObject.ROW, value).sw == 0x6A80
    assert_unchanged(blank, before)


def test_store_row_largest_element_and_k_limits(blank: CardDriver) -> None:
    host = PersoHost(blank)
    assert host.store(PersoObject.ROW, row_bytes_with(blom.P - 1)).sw == OK
    assert host.store(PersoObject.ROW, bytes(32)).sw == OK
    assert blank.state.k == 1
    assert host.store(PersoObject.ROW, bytes(32 * MAX_K)).sw == OK
    assert blank.state.k == MAX_K


@pytest.mark.parametrize(("tag", "value"), [
    (PersoObject.HOLDER_ID, b""), (PersoObject.HOLDER_ID, b"h" * 65),
    (PersoObject.HOLDER_ID, b"holder:\xff"),
    (PersoObject.PIN, b"1234"), (PersoObject.PIN, h("31 32 33 FF FF FF FF FF")),
    (PersoObject.PUK, h("31 32 33 34 35 36 37 41")), (PersoObject.PUK, bytes(8)),
])
def test_store_object_rejected(blank: CardDriver, tag: PersoObject, value: bytes) -> None:
    host = PersoHost(blank)
    before = snapshot(blank)
    assert host.store(tag, value).sw == 0x6A80
    assert_unchanged(blank, before)


@pytest.mark.parametrize("payload", [
    "", "DF 12 08 31 32 33 34 FF FF FF FF DF 13 08 31 32 33 34 35 36 37 38",
    "DF 14 01 00", "80 01 00", "DF 12 09 31 32 33 34 FF FF FF FF", "DF",
])
def test_store_data_bad_payload(blank: CardDriver, payload: str) -> None:
    host = PersoHost(blank)
    before = snapshot(blank)
    assert blank.send(host.apdu(Ins.STORE_DATA, 0, 0, h(payload))).sw == 0x6A80
    assert_unchanged(blank, before)


def test_personalisation_through_a_short_only_reader() -> None:
    """A k = 16 row (512 bytes) travels by command chaining with the C-MAC over the whole."""
    k16_row = [(i * 7919 + 1) % blom.P for i in range(16)]
    store = MemoryStore(blank_state())
    reader = RecordingReader(Applet(store))
    personalise(CardSession(reader, extended=False), TRANSPORT_MASTER, HOLDER, k16_row, PIN, PUK)
    assert store.state.row == blom.row_to_bytes(k16_row)
    assert store.state.lifecycle == Lifecycle.OPERATIONAL
    chained = [apdu for apdu in reader.sent if apdu[0] == 0x90]
    assert [apdu[:5] for apdu in chained] == [h("90 E2 00 00 FF"), h("90 E2 00 00 FF")]
    assert all(len(apdu) <= 4 + 1 + 255 + 1 for apdu in reader.sent)
