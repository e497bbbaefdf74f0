"""Long data: extended length, command chaining (CLA b5, ISO 7816-4 5.4.1) and response
chaining (61xx / GET RESPONSE), through the terminal's protocol stack and as raw APDUs."""

from __future__ import annotations

import pytest

from card_applet import keys
from card_applet.apdu import CommandApdu
from card_applet.applet import MAX_COMMAND_DATA, Applet
from card_applet.state import MemoryStore, PersistentState
from card_applet.tlv import tlv
from terminal.session import CardSession
from tests.card_applet.conftest import (
    HOLDER,
    PIN,
    PIN_BLOCK,
    SELLER,
    SERIAL,
    CardDriver,
    RecordingReader,
    Reply,
    driver_for,
    h,
    pair_key_of,
)

OK = 0x9000
SIZES = [*range(1, 21), *range(97, 4000, 97), 4000]
AAD, CONTEXT = b"envelope header", b"order-0001"
SHORT_APDU_MAX = 4 + 1 + 255 + 1


def plaintext(size: int) -> bytes:
    return bytes((i * 31 + size) & 0xFF for i in range(size))


def encipher_data(plain: bytes) -> bytes:
    return tlv(0x80, plain) + tlv(0x81, AAD) + tlv(0x82, CONTEXT)


def open_as_seller(box: bytes, aad: bytes = AAD, context: bytes = CONTEXT) -> tuple[int, bytes]:
    key = keys.seal_key(pair_key_of(HOLDER, SELLER), HOLDER.encode(), SELLER.encode(), context)
    return keys.open_sealed(key, box, aad)


def chained_exchange(data: bytes, response_size: int) -> list[bytes]:
    """The exact APDUs a short-only terminal sends for one ENCIPHER: 255-byte chained parts,
    the last part with Le = 00, then GET RESPONSE for whatever the card announces by 61xx."""
    parts = [data[i : i + 255] for i in range(0, len(data), 255)]
    apdus = [CommandApdu(0x10, 0x2A, 0x86, 0x80, part).to_bytes() for part in parts[:-1]]
    apdus.append(CommandApdu(0x00, 0x2A, 0x86, 0x80, parts[-1], 256).to_bytes())
    remaining = response_size - 256
    while remaining > 0:
        apdus.append(bytes((0x00, 0xC0, 0x00, 0x00, min(remaining, 256) & 0xFF)))
        remaining -= 256
    return apdus


@pytest.fixture
def holder_reader(operational_template: PersistentState, request: pytest.FixtureRequest
                  ) -> RecordingReader:
    return RecordingReader(Applet(MemoryStore(operational_template)),
                           extended_length=request.param == "extended")


def holder_session(reader: RecordingReader) -> CardSession:
    session = CardSession(reader)
    session.select()
    session.verify_pin(PIN)
    session.set_peer(SELLER)
    reader.sent.clear()
    return session


# -- every size, both ways --------------------------------------------------------------------


@pytest.mark.parametrize("holder_reader", ["extended"], indirect=True)
@pytest.mark.parametrize("size", SIZES)
def test_encipher_extended(holder_reader: RecordingReader, peer: CardSession, size: int) -> None:
    card = holder_session(holder_reader)
    plain = plaintext(size)
    box = card.encrypt(plain, AAD, CONTEXT)
    assert holder_reader.sent == [
        CommandApdu(0x00, 0x2A, 0x86, 0x80, encipher_data(plain), 65536, True).to_bytes()]
    assert len(box) == size + 33
    assert box[:5] == h("01 00 00 00 01")
    assert open_as_seller(box) == (1, plain)
    assert peer.decrypt(box, AAD, CONTEXT) == plain
    assert card.decrypt(peer.encrypt(plain, AAD, CONTEXT), AAD, CONTEXT) == plain


@pytest.mark.parametrize("holder_reader", ["short"], indirect=True)
@pytest.mark.parametrize("size", SIZES)
def test_encipher_chained(holder_reader: RecordingReader, peer: CardSession, size: int) -> None:
    card = holder_session(holder_reader)
    plain = plaintext(size)
    box = card.encrypt(plain, AAD, CONTEXT)
    assert holder_reader.sent == chained_exchange(encipher_data(plain), size + 33)
    assert len(box) == size + 33
    assert box[:5] == h("01 00 00 00 01")
    assert open_as_seller(box) == (1, plain)
    assert peer.decrypt(box, AAD, CONTEXT) == plain
    holder_reader.sent.clear()
    assert card.decrypt(peer.encrypt(plain, AAD, CONTEXT), AAD, CONTEXT) == plain
    assert all(len(apdu) <= SHORT_APDU_MAX for apdu in holder_reader.sent)


@pytest.mark.parametrize("holder_reader", ["short", "extended"], indirect=True)
def test_atc_counts_chained_and_extended_commands_once(holder_reader: RecordingReader) -> None:
    card = holder_session(holder_reader)
    for atc in range(1, 4):
        assert card.encrypt(plaintext(1000))[1:5] == atc.to_bytes(4, "big")
    assert holder_reader.applet.atc == 3


# -- command chaining, raw --------------------------------------------------------------------


def chain_parts(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_chained_encipher_raw(ready_card: CardDriver) -> None:
    data = encipher_data(b"abcdefgh" * 40)
    first, *middle, last = chain_parts(data, 100)
    assert ready_card.cmd(0x10, 0x2A, 0x86, 0x80, first) == Reply(b"", OK)
    for part in middle:
        assert ready_card.cmd(0x10, 0x2A, 0x86, 0x80, part) == Reply(b"", OK)
    assert ready_card.applet.atc == 0  # nothing executes before the last command
    reply = ready_card.cmd(0x00, 0x2A, 0x86, 0x80, last, 65536)
    assert reply.sw == OK
    assert open_as_seller(reply.data) == (1, b"abcdefgh" * 40)


def test_chain_completed_by_an_empty_last_command(ready_card: CardDriver) -> None:
    assert ready_card.cmd(0x10, 0x2A, 0x86, 0x80, encipher_data(b"whole")).sw == OK
    reply = ready_card.send("00 2A 86 80 00")
    assert reply.sw == OK
    assert open_as_seller(reply.data) == (1, b"whole")


def test_chained_verify(card: CardDriver) -> None:
    assert card.cmd(0x10, 0x20, 0x00, 0x81, PIN_BLOCK[:3]) == Reply(b"", OK)
    assert card.state.pin_tries == 3
    assert card.cmd(0x00, 0x20, 0x00, 0x81, PIN_BLOCK[3:]) == Reply(b"", OK)
    assert card.send("00 20 00 81").sw == OK


def test_chain_interrupted_by_another_instruction(ready_card: CardDriver) -> None:
    data = encipher_data(b"abcde")
    assert ready_card.cmd(0x10, 0x2A, 0x86, 0x80, data[:3]) == Reply(b"", OK)
    assert ready_card.send("00 CA 00 C2 00") == Reply(b"", 0x6883)
    # the chain is gone: the same GET DATA now runs, and the tail alone is malformed
    assert ready_card.send("00 CA 00 C2 00") == Reply(SERIAL, OK)
    assert ready_card.cmd(0x00, 0x2A, 0x86, 0x80, data[3:], 256) == Reply(b"", 0x6A80)
    assert ready_card.applet.atc == 0


@pytest.mark.parametrize("other", ["00 2A 80 86 02 61 62 00", "80 2A 86 80 02 61 62 00",
                                   "00 2A 86 81 02 61 62 00", "10 88 00 00 02 61 62",
                                   "00 A4 04 00 05 F0 45 50 30 37 00"])
def test_chain_continued_with_another_header(ready_card: CardDriver, other: str) -> None:
    assert ready_card.cmd(0x10, 0x2A, 0x86, 0x80, h("80 05 61")) == Reply(b"", OK)
    assert ready_card.send(other) == Reply(b"", 0x6883)
    assert ready_card.send("00 CA 00 C2 00") == Reply(SERIAL, OK)


def test_chain_too_long(ready_card: CardDriver) -> None:
    big = bytes(32768)
    assert ready_card.cmd(0x10, 0x2A, 0x86, 0x80, big) == Reply(b"", OK)
    rest = bytes(MAX_COMMAND_DATA - len(big) + 1)
    assert ready_card.cmd(0x10, 0x2A, 0x86, 0x80, rest) == Reply(b"", 0x6A84)
    assert ready_card.send("00 CA 00 C2 00") == Reply(SERIAL, OK)


def test_chain_too_long_on_the_last_command(ready_card: CardDriver) -> None:
    assert ready_card.cmd(0x10, 0x2A, 0x86, 0x80, bytes(MAX_COMMAND_DATA)) == Reply(b"", OK)
    assert ready_card.cmd(0x00, 0x2A, 0x86, 0x80, b"\x00", 256) == Reply(b"", 0x6A84)
    assert ready_card.send("00 CA 00 C2 00") == Reply(SERIAL, OK)


def test_single_command_too_long(ready_card: CardDriver) -> None:
    reply = ready_card.cmd(0x00, 0x2A, 0x86, 0x80, bytes(MAX_COMMAND_DATA + 1), 65536)
    assert reply == Reply(b"", 0x6700)


def test_chain_failure_on_the_last_command_drops_it(ready_card: CardDriver) -> None:
    assert ready_card.cmd(0x10, 0x2A, 0x86, 0x80, h("81 01 AA")) == Reply(b"", OK)
    assert ready_card.cmd(0x00, 0x2A, 0x86, 0x80, h("82 01 BB"), 256) == Reply(b"", 0x6A80)
    assert ready_card.send("00 CA 00 C2 00") == Reply(SERIAL, OK)


# -- response chaining, raw -------------------------------------------------------------------


def test_get_response_with_nothing_pending(card: CardDriver) -> None:
    assert card.send("00 C0 00 00 10") == Reply(b"", 0x6985)


def test_get_response_after_a_complete_response(card: CardDriver) -> None:
    assert card.send("00 CA 00 C2 00") == Reply(SERIAL, OK)
    assert card.send("00 C0 00 00 10") == Reply(b"", 0x6985)


def test_response_chaining_small_le(card: CardDriver) -> None:
    whole = card.send("00 CA 00 C0 00")
    assert (len(whole.data), whole.sw) == (98, OK)
    first = card.send("00 CA 00 C0 10")
    got, sws = [first.data], [first.sw]
    while sws[-1] != OK:
        reply = card.send("00 C0 00 00 10")
        got.append(reply.data)
        sws.append(reply.sw)
    assert b"".join(got) == whole.data
    assert [len(part) for part in got] == [16, 16, 16, 16, 16, 16, 2]
    assert sws == [0x6152, 0x6142, 0x6132, 0x6122, 0x6112, 0x6102, OK]


def test_get_response_le_as_announced(card: CardDriver) -> None:
    first = card.send("00 CA 00 C0 20")
    assert (len(first.data), first.sw) == (32, 0x6142)
    rest = card.send("00 C0 00 00 42")
    assert first.data + rest.data == card.get_data(0xC0).data
    assert rest.sw == OK


def test_response_chaining_over_256(ready_card: CardDriver) -> None:
    plain = plaintext(1000)
    first = ready_card.cmd(0x00, 0x2A, 0x86, 0x80, encipher_data(plain), 256, extended=True)
    got, sws = [first.data], [first.sw]
    while sws[-1] != OK:
        reply = ready_card.send(f"00 C0 00 00 {sws[-1] & 0xFF:02X}")
        got.append(reply.data)
        sws.append(reply.sw)
    assert [len(part) for part in got] == [256, 256, 256, 256, 9]
    assert sws == [0x6100, 0x6100, 0x6100, 0x6109, OK]
    assert open_as_seller(b"".join(got)) == (1, plain)


def test_get_response_extended_le_takes_the_rest(ready_card: CardDriver) -> None:
    plain = plaintext(3000)
    first = ready_card.cmd(0x00, 0x2A, 0x86, 0x80, encipher_data(plain), 256, extended=True)
    assert (len(first.data), first.sw) == (256, 0x6100)
    rest = ready_card.send("00 C0 00 00 00 00 00")
    assert (len(rest.data), rest.sw) == (3033 - 256, OK)
    assert open_as_seller(first.data + rest.data) == (1, plain)


def test_another_command_discards_the_pending_response(card: CardDriver) -> None:
    assert card.send("00 CA 00 C0 10").sw == 0x6152
    assert card.send("00 CA 00 C2 00") == Reply(SERIAL, OK)
    assert card.send("00 C0 00 00 10") == Reply(b"", 0x6985)


@pytest.mark.parametrize(("raw", "sw"), [("00 C0 01 00 10", 0x6A86), ("00 C0 00 01 10", 0x6A86),
                                         ("00 C0 00 00 01 00 10", 0x6700)])
def test_bad_get_response_keeps_the_pending_response(card: CardDriver, raw: str,
                                                     sw: int) -> None:
    first = card.send("00 CA 00 C0 10")
    assert card.send(raw) == Reply(b"", sw)
    rest = card.send("00 C0 00 00 52")
    assert first.data + rest.data == card.get_data(0xC0).data


def test_get_response_is_inter_industry_only(card: CardDriver) -> None:
    assert card.send("00 CA 00 C0 10").sw == 0x6152
    assert card.send("80 C0 00 00 52") == Reply(b"", 0x6D00)


def test_extended_encipher_raw_4000(ready_card: CardDriver) -> None:
    plain = plaintext(4000)
    data = encipher_data(plain)
    raw = h("00 2A 86 80 00") + len(data).to_bytes(2, "big") + data + h("00 00")
    reply = ready_card.send(raw)
    assert (len(reply.data), reply.sw) == (4033, OK)
    assert open_as_seller(reply.data) == (1, plain)


def test_chained_command_before_select_refused_at_the_first_part(
        operational_template: PersistentState) -> None:
    """No application is selected: the first part already gets 6985, as an unchained command
    does, rather than 9000 and a buffered chain that can only fail at its end."""
    card = driver_for(operational_template)
    assert card.cmd(0x10, 0x20, 0x00, 0x81, PIN_BLOCK[:3]) == Reply(b"", 0x6985)
    assert card.cmd(0x10, 0x2A, 0x86, 0x80, bytes(200)) == Reply(b"", 0x6985)
    assert card.applet.v.chain_header is None
    assert card.cmd(0x00, 0xA4, 0x04, 0x0C, h("F0 45 50 30 37")) == Reply(b"", OK)
    assert card.cmd(0x00, 0x20, 0x00, 0x81, PIN_BLOCK[3:]) == Reply(b"", 0x6700)


def test_chained_select(operational_template: PersistentState) -> None:
    card = driver_for(operational_template)
    assert card.cmd(0x10, 0xA4, 0x04, 0x0C, h("F0 45 50")) == Reply(b"", OK)
    assert card.cmd(0x00, 0xA4, 0x04, 0x0C, h("30 37 39")) == Reply(b"", OK)
    assert card.send("00 CA 00 C2 00") == Reply(SERIAL, OK)
