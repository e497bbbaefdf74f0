"""The reader's T=0 engine (terminal/t0.py): against the card's engine in memory (the APDU
mapping, byte for byte), and against scripted cards that break the protocol. Also what T=0
can and cannot see of a corrupted byte (docs/serial.md, "T=0 and corrupted bytes")."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from card_applet.applet import Applet
from card_applet.state import MemoryStore, manufacture
from card_applet.t0 import T0Card
from card_applet.vocabulary import AID, encode_pin
from terminal.errors import ApduNotMappableError, CardStalledError, LineProtocolError
from terminal.session import CardSession
from terminal.t0 import T0Terminal, is_sw1
from tests.t0_pair import MemoryLine, pair

SELECT = bytes.fromhex("00 A4 04 0C") + bytes((len(AID),)) + AID
SELECT_FCI = bytes.fromhex("00 A4 04 00") + bytes((len(AID),)) + AID + b"\x00"


@pytest.fixture
def applet() -> Applet:
    return Applet(MemoryStore(manufacture(bytes(32))))


class Reader:
    """A T0Terminal as a `Reader`, so CardSession runs over it."""

    extended_length = False
    name = "T=0 memory"

    def __init__(self, terminal: T0Terminal) -> None:
        self.terminal = terminal

    def transmit(self, apdu: bytes) -> bytes:
        return self.terminal.transceive(apdu)


# -- the mapping, against the card's engine ---------------------------------------------------


def test_case_3_then_case_4_by_get_response(applet: Applet) -> None:
    terminal, line = pair(applet)
    assert terminal.transceive(SELECT) == b"\x90\x00"
    response = terminal.transceive(SELECT_FCI)
    assert response[:2] == b"\x6f" + bytes((len(response) - 4,)) and response[-2:] == b"\x90\x00"
    # case 4 went as case 3 (no Le), then GET RESPONSE with P3 = the xx of 61xx
    assert line.commands[1] == SELECT_FCI[:-1]
    assert line.commands[2] == bytes((0x00, 0xC0, 0x00, 0x00, len(response) - 2))
    assert terminal.stats.get_responses == 1


def test_case_4_takes_no_more_than_le(applet: Applet) -> None:
    terminal, line = pair(applet)
    response = terminal.transceive(SELECT_FCI[:-1] + b"\x10")  # Le 16
    assert len(response) == 18 and response[-2] == 0x61  # the rest by GET RESPONSE
    assert line.commands[-1] == bytes.fromhex("00 C0 00 00 10")


def test_case_2_and_case_1(applet: Applet) -> None:
    terminal, line = pair(applet)
    terminal.transceive(SELECT)
    response = terminal.transceive(bytes.fromhex("00 84 00 00 08"))
    assert len(response) == 10 and response[-2:] == b"\x90\x00"
    assert terminal.transceive(bytes.fromhex("00 20 00 81")) == b"\x69\x85"  # case 1 query
    assert line.commands[-1] == bytes.fromhex("00 20 00 81")


class ShortAnswers:
    """An applet with 40 bytes to give whatever Le asks: the card answers 6C 28."""

    def __init__(self) -> None:
        self.runs = 0

    def process(self, command: bytes) -> bytes:
        self.runs += 1
        return bytes(range(40)) + b"\x90\x00"


def test_6c_is_answered_by_the_same_header_with_p3_na() -> None:
    applet = ShortAnswers()
    terminal, _line = pair(applet)
    assert terminal.transceive(bytes.fromhex("00 CA 00 FF 00")) == bytes(range(40)) + b"\x90\x00"
    assert terminal.stats.reissues == 1
    assert applet.runs == 1  # the repeat was answered from what the card kept


def test_byte_by_byte_both_ways(applet: Applet) -> None:
    terminal, _ = pair(applet, card=T0Card(byte_by_byte=True))
    session = CardSession(Reader(terminal))
    assert session.select().version == (1, 0)
    assert len(session.get_challenge(200)) == 200


def test_the_session_runs_over_t0_with_chaining_and_get_response(applet: Applet) -> None:
    session = CardSession(Reader(pair(applet)[0]))
    session.select()
    assert len(session.get_challenge(256)) == 256


@pytest.mark.parametrize("apdu, why", [
    (bytes.fromhex("00 A4 04 00 05 F0 45"), "malformed APDU"),
    (bytes.fromhex("00 A4 04 00 00 01 00") + bytes(256), "short APDUs only"),
    (bytes.fromhex("00 84 00 00 00 01 01"), "short APDUs only"),  # Ne 257
])
def test_what_t0_cannot_carry_is_refused_before_a_byte_is_sent(
        applet: Applet, apdu: bytes, why: str) -> None:
    terminal, _line = pair(applet)
    with pytest.raises(ApduNotMappableError, match=why):
        terminal.transceive(apdu)
    assert terminal.stats.bytes_sent == 0


def test_an_extended_apdu_that_fits_short_is_sent_short(applet: Applet) -> None:
    terminal, line = pair(applet)
    assert terminal.transceive(bytes.fromhex("00 A4 04 0C 00 00 0A") + AID) == b"\x90\x00"
    assert line.commands == [SELECT]


# -- scripted cards that break the protocol ---------------------------------------------------


@dataclass
class Script:
    """A card that answers the n-th TPDU header with the n-th reply, whatever it was."""

    replies: list[bytes]
    sent: bytearray = field(default_factory=bytearray)
    _out: bytearray = field(default_factory=bytearray)

    def send(self, data: bytes) -> None:
        self.sent += data
        if len(data) == 5 and self.replies:
            self._out += self.replies.pop(0)

    def read(self, size: int, timeout: float) -> bytes:
        chunk = bytes(self._out[:size])
        del self._out[:size]
        return chunk


class NullFlood:
    """A card that answers every header with NULL, forever."""

    def __init__(self) -> None:
        self.nulls = 0

    def send(self, data: bytes) -> None:
        pass

    def read(self, size: int, timeout: float) -> bytes:
        self.nulls += size
        return b"\x60" * size


def terminal_for(link: object, **options: float) -> T0Terminal:
    return T0Terminal(link, wwt=0.01, name="T=0 test", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("reply, message", [
    (b"\x42", "procedure byte 42 after 00 84 00 00 08 is none of ACK \\(84\\), ACK for one "
              "byte \\(7B\\), NULL \\(60\\) or SW1"),
    (b"\x84" + bytes(8) + b"\x84", "procedure byte 84 asks for data after 00 84 00 00 08, but "
                                   "all P3 = 8 bytes are received"),
    (b"\x7b\x00\x90\x00", "SW 9000 after 1 of the 8 data bytes P3 asked for"),
    (b"\x84" + bytes(5), "5 of 8 data bytes, then nothing within the work waiting time"),
    (b"", "no procedure byte within the work waiting time"),
    (b"\x90", "no SW2 within the work waiting time"),
])
def test_what_the_reader_detects_on_a_case_2(reply: bytes, message: str) -> None:
    with pytest.raises(LineProtocolError, match=message):
        terminal_for(Script([reply])).transceive(bytes.fromhex("00 84 00 00 08"))


@pytest.mark.parametrize("reply, message", [
    (b"\xa4\xa4", "procedure byte A4 asks for data after 00 A4 04 0C 0A, but all "
                          "P3 = 10 bytes are sent"),
    (b"\x5b\x90\x00", "SW 9000 after 1 of the 10 data bytes of 00 A4 04 0C 0A"),
    (b"\x60\x60\x20\x00", "procedure byte 20"),
])
def test_what_the_reader_detects_on_a_case_3(reply: bytes, message: str) -> None:
    with pytest.raises(LineProtocolError, match=message):
        terminal_for(Script([reply])).transceive(SELECT)


def test_a_card_may_refuse_a_case_3_midway() -> None:
    script = Script([b"\x5b\x6a\x80"])  # one byte taken, then refused: allowed
    assert terminal_for(script).transceive(SELECT) == b"\x6a\x80"
    assert bytes(script.sent) == SELECT[:6]


def test_an_ack_on_a_case_1_is_an_error() -> None:
    with pytest.raises(LineProtocolError, match="P3 = 0 bytes are sent \\(P3 = 00\\)"):
        terminal_for(Script([b"\x20"])).transceive(bytes.fromhex("00 20 00 81"))


def test_nulls_are_waited_for() -> None:
    terminal = terminal_for(Script([b"\x60" * 20 + b"\x84" + bytes(8) + b"\x90\x00"]))
    assert terminal.transceive(bytes.fromhex("00 84 00 00 08")) == bytes(8) + b"\x90\x00"
    assert terminal.stats.nulls == 20


def test_a_null_flood_is_bounded() -> None:
    flood = NullFlood()
    terminal = terminal_for(flood, max_null_wait=1.0)  # WWT 0.01 s: 100 NULLs granted
    with pytest.raises(CardStalledError, match="NULL past 1 s of work waiting time"):
        terminal.transceive(bytes.fromhex("00 84 00 00 08"))
    assert terminal.stats.nulls == flood.nulls == 101  # the 101st is not honoured


def test_the_null_budget_starts_afresh_with_each_command() -> None:
    one = b"\x60" * 90 + b"\x69\x85"
    terminal = terminal_for(Script([one, one]), max_null_wait=1.0)
    for _ in range(2):
        assert terminal.transceive(bytes.fromhex("00 84 00 00 08")) == b"\x69\x85"


# -- corrupted bytes: T=0 has no checksum ----------------------------------------------------


def flip(at: int, mask: int = 0x01):
    def tamper(index: int, byte: int) -> int:
        return byte ^ mask if index == at else byte
    return tamper


def test_a_corrupted_data_byte_is_executed_unseen(applet: Applet) -> None:
    """A PIN byte changed on the line: the card runs VERIFY with the wrong PIN, and nothing
    on the line says so. (Over T=1 its EDC would have caught it.)"""
    terminal, line = pair(applet)
    terminal.transceive(SELECT)
    verify = bytes.fromhex("00 20 00 81 08") + encode_pin("1234")
    line.to_card = flip(len(SELECT) + 5 + 2)  # the third PIN byte
    response = terminal.transceive(verify)
    assert response == b"\x69\x85"  # refused (a blank card): but for the PIN it received
    assert line.commands[-1] != verify and line.commands[-1][:5] == verify[:5]


def test_a_corrupted_response_byte_reaches_the_caller_unseen(applet: Applet) -> None:
    terminal, line = pair(applet)
    terminal.transceive(SELECT)
    line.to_reader = flip(3 + 1 + 3)  # after SELECT's A4 90 00 and the ACK: challenge[3]
    response = terminal.transceive(bytes.fromhex("00 84 00 00 08"))
    assert response[-2:] == b"\x90\x00" and response[3] != applet.v.challenge[3]


def test_a_corrupted_procedure_byte_is_detected(applet: Applet) -> None:
    terminal, line = pair(applet)
    line.to_reader = flip(0, 0x20)  # ACK A4 arrives as 84
    with pytest.raises(LineProtocolError, match="procedure byte 84 after 00 A4 04 0C 0A"):
        terminal.transceive(SELECT)
    assert line.commands == []  # the card still waits for the data: nothing ran


def test_a_corrupted_p3_is_detected_as_a_timeout(applet: Applet) -> None:
    terminal, line = pair(applet)
    line.to_card = flip(4, 0x10)  # P3 0A arrives as 1A: the card waits for 16 more bytes
    with pytest.raises(LineProtocolError, match="no procedure byte within the work waiting"):
        terminal.transceive(SELECT)
    assert line.commands == [] and line.card.abandon()  # dropped after WWT, never run


def test_a_corrupted_ins_runs_another_command(applet: Applet) -> None:
    """INS 84 (GET CHALLENGE) arriving as 86: the card answers for the command it got; the
    reader sees only a status word, as for any refusal."""
    terminal, line = pair(applet)
    terminal.transceive(SELECT)
    line.to_card = flip(len(SELECT) + 1, 0x02)
    assert terminal.transceive(bytes.fromhex("00 84 00 00 08")) == b"\x6d\x00"
    assert line.commands[-1] == bytes.fromhex("00 86 00 00 08")


def test_memory_line_is_a_byte_link(applet: Applet) -> None:
    line = MemoryLine(applet)
    line.send(bytes.fromhex("00 84 00 00 08"))
    assert line.read(10, 0.0) == b"\x69\x85"  # not selected
    assert line.read(1, 0.0) == b""


# -- whatever a card sends, the reader ends the command with a declared error ------------------


class RandomCard:
    """Answers with seeded random bytes (NULLs included), then falls silent."""

    def __init__(self, rng: random.Random) -> None:
        self.out = bytearray(rng.randbytes(rng.randrange(0, 40)))
        if rng.random() < 0.5:  # bias towards bytes the reader acts on
            self.out[:0] = bytes(rng.choice((0x60, 0x84, 0x7B, 0xA4, 0x5B, 0x61, 0x6C, 0x90))
                                 for _ in range(rng.randrange(1, 6)))

    def send(self, data: bytes) -> None:
        pass

    def read(self, size: int, timeout: float) -> bytes:
        chunk = bytes(self.out[:size])
        del self.out[:size]
        return chunk


def test_random_card_answers_end_in_a_response_or_a_declared_error() -> None:
    rng = random.Random(20261129)
    apdus = [bytes.fromhex("00 84 00 00 08"), SELECT, SELECT_FCI, bytes.fromhex("00 20 00 81")]
    outcomes = {"response": 0, "error": 0}
    for _ in range(3000):
        terminal = terminal_for(RandomCard(rng), max_null_wait=0.2)
        try:
            response = terminal.transceive(rng.choice(apdus))
        except LineProtocolError:  # CardStalledError included
            outcomes["error"] += 1
        else:
            assert len(response) >= 2 and is_sw1(response[-2])
            outcomes["response"] += 1
    assert outcomes["response"] > 0 and outcomes["error"] > 0


def test_random_reader_bytes_never_break_the_card() -> None:
    """Whatever comes, the card answers only with procedure bytes, data after an ACK, or a
    status word, hands out at most one command at a time, and never raises."""
    rng = random.Random(7)
    card = T0Card()
    for _ in range(20000):
        if card.busy:
            answer = rng.choice([b"\x90\x00", bytes(rng.randrange(0, 300)) + b"\x90\x00",
                                 b"\x6a\x82"])
            sent = card.executed(answer, card.generation).send
            assert not sent or (is_sw1(sent[-2]) and len(sent) >= 2)
            continue
        chunk = rng.randbytes(rng.randrange(1, max(2, card.wanted + 1)))[: card.wanted]
        out = card.receive(chunk)
        if out.execute is not None:
            assert card.busy and not out.send
        elif out.send:
            assert len(out.send) in (1, 2)  # an ACK, or a status word
        if rng.random() < 0.01:
            card.abandon()
