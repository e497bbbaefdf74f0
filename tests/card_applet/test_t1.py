"""T=1 block codec and the card's engine, block by block (ISO/IEC 7816-3 11)."""

from __future__ import annotations

import dataclasses

import pytest

from card_applet.atr import Edc
from card_applet.line import RESET_REQUEST
from card_applet.serial_card import Event, LineFramer
from card_applet.t1 import Block, BlockError, CardOutput, Kind, RError, SType, T1Card, crc16


def test_crc_is_iso13239_fcs16() -> None:
    assert crc16(b"123456789") == 0x906E  # CRC-16/X-25 check value


def test_block_encoding_lrc_and_crc() -> None:
    block = Block.i(0, bytes.fromhex("00A4040C"))
    assert block.encode().hex(" ").upper() == "00 00 04 00 A4 04 0C A8"
    assert Block.r(1).encode().hex() == "00900090"
    assert Block.s(SType.IFS, False, b"\xfe").encode().hex() == "00c101fe3e"
    with_crc = block.encode(Edc.CRC)
    assert len(with_crc) == 3 + 4 + 2
    assert Block.decode(with_crc, Edc.CRC) == block


@pytest.mark.parametrize("block, kind, text", [
    (Block.i(1, b"x", more=True), Kind.I, "I(1, M) 1 bytes"),
    (Block.r(0, RError.EDC), Kind.R, "R(0, EDC error)"),
    (Block.s(SType.WTX, True, b"\x02"), Kind.S, "S(WTX response 2)"),
])
def test_block_fields(block: Block, kind: Kind, text: str) -> None:
    assert block.kind is kind
    assert str(block) == text
    assert Block.decode(block.encode()) == block


@pytest.mark.parametrize("raw, error, message", [
    ("00 00 01 41 41", RError.EDC, "EDC mismatch"),
    ("00 00 FF", RError.OTHER, "shorter"),
    ("00 00 FF 00", RError.OTHER, "LEN FF"),
    ("00 00 02 41 43", RError.EDC, "LEN 2 but 5 bytes"),
    ("00 84 00 84", RError.OTHER, "R-block PCB 84 undefined"),
    ("00 C5 00 C5", RError.OTHER, "S-block PCB C5 undefined"),
    ("00 C1 00 C1", RError.OTHER, "S\\(IFS\\) with 0 INF bytes"),
    ("11 00 00 11", RError.OTHER, "SAD = DAD"),
])
def test_invalid_blocks(raw: str, error: RError, message: str) -> None:
    with pytest.raises(BlockError, match=message) as exc:
        Block.decode(bytes.fromhex(raw))
    assert exc.value.error is error


def test_inf_beyond_the_receivers_ifs_is_invalid() -> None:
    raw = Block.i(0, bytes(40)).encode()
    with pytest.raises(BlockError, match="exceeds the receiver's IFS 32"):
        Block.decode(raw, max_inf=32)


def test_card_executes_a_repeated_i_block_once() -> None:
    card = T1Card()
    command = Block.i(0, bytes.fromhex("00CA00C200")).encode()
    out = card.receive(command)
    assert out.execute == bytes.fromhex("00CA00C200")
    answer = card.executed(b"\x90\x00", card.generation).send
    assert Block.decode(answer) == Block.i(0, b"\x90\x00")
    # the terminal never got our answer and (against rule 7.1) repeats its I-block
    again = card.receive(command)
    assert again.execute is None and again.send == answer
    # rule 7.2: R-block naming our N(S): the same answer, not a second execution
    assert card.receive(Block.r(0).encode()).send == answer
    assert card.executions == 1


def test_card_answers_garbage_with_r_block_naming_the_expected_ns() -> None:
    card = T1Card()
    out = card.receive(bytes.fromhex("00 00 01 41 00"))
    assert Block.decode(out.send) == Block.r(0, RError.EDC)
    assert out.execute is None


def test_card_chains_its_response_by_ifsd_and_waits_for_acknowledgements() -> None:
    card = T1Card()
    assert card.receive(Block.s(SType.IFS, False, b"\x10").encode()).send == \
        Block.s(SType.IFS, True, b"\x10").encode()
    card.receive(Block.i(0, b"\x00\x84\x00\x00\x20").encode())
    first = Block.decode(card.executed(bytes(34), card.generation).send)
    assert (first.ns, first.more, len(first.inf)) == (0, True, 16)
    second = Block.decode(card.receive(Block.r(1).encode()).send)
    assert (second.ns, second.more, len(second.inf)) == (1, True, 16)
    # our acknowledgement got lost on the way? the terminal asks again for N(S)=1
    assert Block.decode(card.receive(Block.r(1).encode()).send) == second
    last = Block.decode(card.receive(Block.r(0).encode()).send)
    assert (last.ns, last.more, len(last.inf)) == (0, False, 2)


def test_a_lower_ifsd_mid_chain_holds_for_every_later_block() -> None:
    # broke the card_t1 fuzz target's IFSD invariant (corpus/card_t1/regress-ifsd-mid-chain):
    # parts were cut once, when the response came, so after S(IFS request 16) the card
    # went on sending 64-byte blocks to a terminal that takes 16 (rule 4: the new IFSD
    # holds for every block after it), and re-sent a lost one at its old size too
    card = T1Card()
    card.receive(Block.s(SType.IFS, False, b"\x40").encode())
    card.receive(Block.i(0, b"\x00\x84\x00\x00\xc8").encode())
    response = bytes(range(200)) + b"\x90\x00"
    first = Block.decode(card.executed(response, card.generation).send)
    assert len(first.inf) == 64
    card.receive(Block.s(SType.IFS, False, b"\x10").encode())
    # the terminal did not get the first part: it comes again, cut to the new size
    again = Block.decode(card.receive(Block.r(0).encode()).send)
    assert (again.ns, again.more, again.inf) == (0, True, response[:16])
    received, nr = bytearray(again.inf), 1
    while True:
        block = Block.decode(card.receive(Block.r(nr).encode()).send)
        assert len(block.inf) <= 16 and block.ns == nr
        received += block.inf
        nr ^= 1
        if not block.more:
            break
    assert bytes(received) == response


def test_card_wtx_holds_the_response_until_the_terminal_answers() -> None:
    card = T1Card()
    card.receive(Block.i(0, b"\x00\x84\x00\x00\x08").encode())
    request = card.request_wtx(2).send
    assert Block.decode(request) == Block.s(SType.WTX, False, b"\x02")
    assert card.executed(bytes(10), card.generation).send == b""  # not our turn yet
    # the terminal's answer is corrupted: repeat the request (rule 7.2)
    assert card.receive(b"\x00\xe3\x01\x02\x00").send == request
    done = card.receive(Block.s(SType.WTX, True, b"\x02").encode()).send
    assert Block.decode(done) == Block.i(0, bytes(10))


def test_resynch_starts_over_and_forgets_a_running_command() -> None:
    card = T1Card()
    card.receive(Block.s(SType.IFS, False, b"\xfe").encode())
    card.receive(Block.i(0, b"\x00\x84\x00\x00\x08").encode())
    generation = card.generation
    out = card.receive(Block.s(SType.RESYNCH).encode())
    assert Block.decode(out.send) == Block.s(SType.RESYNCH, True)
    assert (card.ifsd, card.expected_ns, card.next_ns) == (32, 0, 0)
    assert card.executed(bytes(10), generation).send == b""  # answers no one


def test_abort_drops_a_chain_in_progress() -> None:
    card = T1Card()
    ack = card.receive(Block.i(0, b"\x00\x2a\x86\x80", more=True).encode())
    assert Block.decode(ack.send) == Block.r(1)
    out = card.receive(Block.s(SType.ABORT).encode())
    assert Block.decode(out.send) == Block.s(SType.ABORT, True)
    assert card.executions == 0


def test_card_output_is_a_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CardOutput(b"\x00").send = b""  # type: ignore[misc]


# -- the line framer (card_applet.serial_card), sans-IO ---------------------------------------

CWT = 0.05


def powered_framer(edc: Edc = Edc.LRC) -> LineFramer:
    framer = LineFramer(CWT, edc)
    assert framer.feed(RESET_REQUEST, 0.0) == [(Event.RESET, b"")]
    return framer


@pytest.mark.parametrize("edc", list(Edc))
def test_framer_cuts_blocks_by_len(edc: Edc) -> None:
    framer = powered_framer(edc)
    one, two = Block.i(0, b"\x00\xa4\x04\x00").encode(edc), Block.r(1).encode(edc)
    assert framer.feed(one + two, 1.0) == [(Event.BLOCK, one), (Event.BLOCK, two)]
    assert framer.poll(2.0) == []


@pytest.mark.parametrize("edc", list(Edc))
def test_a_block_whose_len_shrank_costs_one_answer(edc: Edc) -> None:
    framer = powered_framer(edc)
    block = Block.i(0, bytes(range(0x10, 0x1F))).encode(edc)
    shrunk = block[:2] + b"\x02" + block[3:]  # LEN 0F read as 02
    assert framer.feed(shrunk[:9], 1.0) == []  # no "block" cut from its first bytes
    assert framer.feed(shrunk[9:], 1.001) == []
    assert framer.poll(1.001 + CWT / 2) == []  # not before the line is quiet
    assert framer.poll(1.001 + CWT) == [(Event.INVALID, b"")]
    assert framer.poll(2.0) == []  # once
    good = Block.r(0).encode(edc)
    assert framer.feed(good, 3.0) == [(Event.BLOCK, good)]


def test_a_reset_ends_a_drain_in_the_same_burst() -> None:
    framer = powered_framer()
    block = Block.i(0, bytes(20)).encode()
    garbage = block[:2] + b"\x01" + block[3:]
    assert framer.feed(garbage + RESET_REQUEST, 1.0) == [(Event.RESET, b"")]
    assert framer.poll(2.0) == []
