"""Personalisation: INITIALIZE UPDATE, STORE DATA and SET STATUS under the C-MAC session, and the
lock. Cards: conftest.py."""

from __future__ import annotations

import pytest

from card_applet import blom, keys
from card_applet import pin as pin_block
from card_applet.applet import MAX_K, Applet
from card_applet.state import MemoryStore
from card_applet.tlv import tlv
from card_applet.vocabulary import Ins, Lifecycle, PersoObject, encode_pin
from host.centre.personalisation import PersoChannel, personalise
from host.errors import PersonalisationError
from terminal.inprocess import InProcessReader
from terminal.session import CardSession
from tests.card_applet.applet_helpers import (
    OK,
    assert_unchanged,
    public_template,
    snapshot,
)
from tests.card_applet.conftest import (
    CARD_AUTH_KEY,
    HOLDER,
    PIN,
    PIN_BLOCK,
    PUK,
    PUK_BLOCK,
    SERIAL,
    TRANSPORT_MASTER,
    CardDriver,
    PersoHost,
    RecordingReader,
    Reply,
    blank_state,
    h,
    row_of,
)

# == personalisation ==========================================================================


def test_personalisation_result(blank: CardDriver) -> None:
    host = PersoHost(blank)
    assert host.serial == SERIAL
    host.load_all()
    assert host.lock() == Reply(b"", OK)
    state = blank.state
    assert (state.lifecycle, state.holder_id, state.row) == (
        Lifecycle.OPERATIONAL, HOLDER.encode(), blom.row_to_bytes(row_of(HOLDER)))
    assert (state.pin_tries, state.puk_tries, state.atc_reserved) == (3, 3, 0)
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
    assert host.store(PersoObject.PIN, encode_pin("0000")).sw == 0x6985
    assert host.lock().sw == 0x6985
    assert blank.send("80 50 00 00 08 0102030405060708 00").sw == 0x6985


def test_objects_may_be_rewritten_before_lock(blank: CardDriver) -> None:
    host = PersoHost(blank)
    host.load_all()
    assert host.store(PersoObject.PIN, encode_pin("9999")).sw == OK
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
