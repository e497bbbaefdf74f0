"""Both halves of T=1 wired together in memory (as h11's ConnectionPair): the terminal's
engine against the card's, with blocks lost or corrupted on the way by a seeded schedule."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import pytest

from card_applet.atr import Edc
from card_applet.t1 import Block, Kind, RError, SType, T1Card
from terminal.errors import CardStalledError, RetryLimitError
from terminal.t1 import MAX_IFS_REQUESTS, MAX_WTX_WAIT, T1Terminal

Fault = Callable[[str, bytes], bytes | None]  # direction, block -> block, or None: lost


def no_fault(_direction: str, raw: bytes) -> bytes | None:
    return raw


class MemoryLine:
    """The card engine behind a BlockLink: commands are answered by `handler`; commands whose
    INS is in `slow` ask for a waiting time extension before answering."""

    def __init__(self, handler: Callable[[bytes], bytes], *, fault: Fault = no_fault,
                 slow: frozenset[int] = frozenset(), edc: Edc = Edc.LRC, ifsc: int = 254):
        self.card = T1Card(ifsc=ifsc, edc=edc)
        self.handler, self.fault, self.slow = handler, fault, slow
        self.outbox: deque[bytes] = deque()
        self.executed: list[bytes] = []

    def send(self, data: bytes) -> None:
        raw = self.fault("to card", data)
        if raw is None:
            return
        out = self.card.receive(raw)
        self.outbox.append(out.send)
        if out.execute is not None:
            self.executed.append(out.execute)
            generation = self.card.generation
            if out.execute[1] in self.slow:
                self.outbox.append(self.card.request_wtx(3).send)
            self.outbox.append(self.card.executed(self.handler(out.execute), generation).send)

    def receive(self, timeout: float) -> bytes | None:
        while self.outbox:
            raw = self.outbox.popleft()
            if raw:
                return self.fault("to terminal", raw)
        return None  # the card is silent: BWT runs out


def answer(command: bytes) -> bytes:
    """Le bytes of a pattern, then the command's length, then 9000."""
    size = int.from_bytes(command[-2:], "big") if len(command) > 7 else command[-1]
    return bytes(i & 0xFF for i in range(size)) + len(command).to_bytes(2, "big") + b"\x90\x00"


def extended(data_size: int, le: int) -> bytes:
    return (bytes.fromhex("802A8680 00") + data_size.to_bytes(2, "big") + bytes(data_size)
            + le.to_bytes(2, "big"))


def pair(**options: object) -> tuple[T1Terminal, MemoryLine]:
    line = MemoryLine(answer, **options)  # type: ignore[arg-type]
    return T1Terminal(line, ifsc=line.card.ifsc, edc=line.card.edc, bwt=0.01), line


@pytest.mark.parametrize("edc", list(Edc))
def test_one_apdu(edc: Edc) -> None:
    terminal, line = pair(edc=edc)
    assert terminal.transceive(bytes.fromhex("00CA00C208")) == answer(bytes.fromhex(
        "00CA00C208"))
    assert line.executed == [bytes.fromhex("00CA00C208")]
    assert (terminal.stats.blocks_sent, terminal.stats.blocks_received) == (1, 1)


def test_4000_byte_command_and_response_chain_both_ways() -> None:
    terminal, line = pair()
    terminal.negotiate_ifsd(254)
    command = extended(4000, 4000)
    response = terminal.transceive(command)
    assert response == answer(command)
    assert line.executed == [command]
    blocks_out = -(-len(command) // 254)
    blocks_in = -(-len(response) // 254)
    # one S(IFS), each command part; one R per response part but the last
    assert terminal.stats.blocks_sent == 1 + blocks_out + blocks_in - 1
    assert terminal.stats.retransmissions == 0


def test_ifsd_negotiation_sets_the_cards_block_size() -> None:
    terminal, line = pair()
    assert line.card.ifsd == 32  # ISO default until the terminal says otherwise
    terminal.negotiate_ifsd(20)
    assert line.card.ifsd == 20
    sizes: list[int] = []

    def watch(direction: str, raw: bytes) -> bytes:
        if direction == "to terminal":
            sizes.append(raw[2])
        return raw

    line.fault = watch
    terminal.transceive(bytes.fromhex("00840000") + b"\x64")
    assert sizes == [20] * 5 + [4]  # 100 + 4 bytes of response, at most IFSD per block


class CardLowersIfsc(MemoryLine):
    """A card that, given the first part of a chain, asks for a smaller IFSC (S(IFS request))
    before acknowledging it, and from then on refuses larger blocks; `lose_first`: that first
    part arrives corrupted, so the card's R-block asks for it again. RESYNCH takes the card
    back to its ATR's IFSC (rule 6)."""

    def __init__(self, new_ifsc: int, *, lose_first: bool = False) -> None:
        super().__init__(answer)
        self.atr_ifsc, self.new_ifsc, self.lose_first = self.card.ifsc, new_ifsc, lose_first
        self.held: bytes | None = None
        self.asked = False  # the card asks once
        self.sizes: list[int] = []  # INF sizes of the terminal's I-blocks, as sent

    def send(self, data: bytes) -> None:
        block = Block.decode(data)
        if block.is_s(SType.IFS, True):
            assert block.inf == bytes((self.new_ifsc,))
            self.card.ifsc = self.new_ifsc
            assert self.held is not None
            self.outbox.append(self.held)  # now the answer to the I-block
            self.held = None
            return
        if block.is_s(SType.RESYNCH, False):
            self.card.ifsc = self.atr_ifsc
        ask = block.kind is Kind.I and not self.asked
        if block.kind is Kind.I:
            self.sizes.append(len(block.inf))
            if ask and self.lose_first:
                data = data[:-1] + bytes((data[-1] ^ 0xFF,))
        super().send(data)
        if ask:
            self.asked = True
            self.held = self.outbox.pop()
            self.outbox.append(Block.s(SType.IFS, False, bytes((self.new_ifsc,))).encode())


def test_card_ifs_request_changes_what_the_terminal_sends() -> None:
    line = CardLowersIfsc(32)
    terminal = T1Terminal(line, ifsc=254, bwt=0.01)
    command = extended(600, 1)  # 609 bytes
    assert terminal.transceive(command) == answer(command)
    assert line.executed == [command]
    # the first part went out at the ATR's IFSC; every later one fits the card's new IFSC
    assert line.sizes == [254] + [32] * 11 + [3]
    assert terminal.ifsc == 32
    assert terminal.stats.retransmissions == 0


def test_a_part_sent_again_after_an_ifsc_change_is_cut_again() -> None:
    line = CardLowersIfsc(32, lose_first=True)
    terminal = T1Terminal(line, ifsc=254, bwt=0.01)
    command = extended(600, 1)
    assert terminal.transceive(command) == answer(command)
    assert line.executed == [command]
    # the card never got the 254-byte part: it goes again from its start, 32 bytes at a time
    assert line.sizes == [254] + [32] * 19 + [1]


def test_resynch_restores_the_atrs_ifsc() -> None:
    line = CardLowersIfsc(32)
    terminal = T1Terminal(line, ifsc=254, bwt=0.01)
    terminal.negotiate_ifsd(100)
    terminal.transceive(extended(300, 1))
    assert terminal.ifsc == 32
    terminal.resynch()
    assert (terminal.ifsc, terminal.ifsd) == (254, 32)  # rule 6: the initial parameters
    line.sizes.clear()
    command = extended(300, 1)  # 309 bytes
    assert terminal.transceive(command) == answer(command)
    assert line.sizes == [254, 55]


def test_wtx_stretches_the_wait_and_the_answer_arrives() -> None:
    terminal, line = pair(slow=frozenset({0x2A}))
    command = extended(10, 10)
    assert terminal.transceive(command) == answer(command)
    assert terminal.stats.wtx == 1
    assert len(line.executed) == 1


def test_resynch_resets_both_sides() -> None:
    terminal, line = pair()
    terminal.transceive(bytes.fromhex("00CA00C208"))
    terminal.resynch()
    assert (terminal.ns, terminal.expected, line.card.next_ns, line.card.expected_ns) == (
        0, 0, 0, 0)
    terminal.transceive(bytes.fromhex("00CA00C208"))
    assert len(line.executed) == 2


def test_wtx_multiplier_zero_is_an_invalid_block() -> None:
    terminal, line = pair()
    sent: list[bytes] = []

    def record(direction: str, raw: bytes) -> bytes:
        if direction == "to card":
            sent.append(raw)
        return raw

    line.fault = record
    line.outbox.append(Block.s(SType.WTX, False, b"\x00").encode())  # before the answer
    command = bytes.fromhex("00CA00C208")
    assert terminal.transceive(command) == answer(command)
    # rule 7.1: an R-block asking for the card's block, not S(WTX response 0) and a 0 s wait
    assert sent[1] == Block.r(0, RError.OTHER).encode()
    assert Block.s(SType.WTX, True, b"\x00").encode() not in sent
    assert terminal.stats.wtx == 0
    assert line.executed == [command]


def test_endless_wtx_zero_hits_the_retry_limit() -> None:
    class Stalling:
        def send(self, data: bytes) -> None:
            pass

        def receive(self, timeout: float) -> bytes:
            return Block.s(SType.WTX, False, b"\x00").encode()

    terminal = T1Terminal(Stalling(), bwt=0.01)
    with pytest.raises(RetryLimitError):
        terminal.transceive(bytes.fromhex("00CA00C208"))


@pytest.mark.parametrize("seed", range(5))
def test_lost_and_corrupted_blocks_never_execute_twice(seed: int) -> None:
    rng = random.Random(seed)

    def noisy(_direction: str, raw: bytes) -> bytes | None:
        roll = rng.random()
        if roll < 0.05:
            return None
        if roll < 0.15:
            at = rng.randrange(len(raw))
            return raw[:at] + bytes((raw[at] ^ rng.randrange(1, 256),)) + raw[at + 1:]
        return raw

    terminal, line = pair(fault=noisy, slow=frozenset({0x2A}))
    terminal.max_retries = 12  # 15% of blocks fail: far noisier than any real line
    terminal.negotiate_ifsd(64)
    commands = [extended(rng.randrange(0, 700), rng.randrange(1, 700)) for _ in range(300)]
    for command in commands:
        assert terminal.transceive(command) == answer(command)
    assert line.executed == commands  # each exactly once, in order
    assert terminal.stats.retransmissions > 50


def test_retry_limit_reports_a_clear_error() -> None:
    terminal, line = pair(fault=lambda _d, _raw: None)  # the line is dead
    with pytest.raises(RetryLimitError, match=r"did not answer after 4 attempts, nor to "
                                              r"S\(RESYNCH\); it needs a reset"):
        terminal.transceive(bytes.fromhex("00CA00C208"))
    assert line.executed == []


def test_retry_limit_after_resynch_does_not_resend_the_command() -> None:
    responses = 0

    def lose_i_blocks(direction: str, raw: bytes) -> bytes | None:
        nonlocal responses
        if direction == "to terminal" and Block.decode(raw).kind is Kind.I:
            responses += 1
            return None  # every answer to the command is lost, S-blocks pass
        return raw

    terminal, line = pair(fault=lose_i_blocks)
    with pytest.raises(RetryLimitError, match="resynchronised, but the command's outcome is "
                                              "unknown"):
        terminal.transceive(bytes.fromhex("00CA00C208"))
    assert len(line.executed) == 1
    assert responses == 4  # sent once, then re-sent on each of 3 R-blocks
    assert terminal.stats.resynchs == 1


# -- a card that never stops asking (docs/serial.md, "Bounds") --------------------------------


class ScriptedCard:
    """A card that answers each block the terminal sends with `request` (an S-block), `times`
    times (None: forever), and then with a one-block answer, 90 00. It records the waits the
    terminal allows it. A reader without bounds answers forever: past `LIMIT` requests the
    card stops the test instead of hanging it."""

    LIMIT = 100_000

    def __init__(self, request: Block, times: int | None = None) -> None:
        self.request, self.times = request.encode(), times
        self.asked = 0
        self.pending = 0  # blocks from the terminal not answered yet
        self.sent: list[Block] = []
        self.waits: list[float] = []

    def send(self, data: bytes) -> None:
        self.sent.append(Block.decode(data))
        self.pending += 1

    def receive(self, timeout: float) -> bytes | None:
        self.waits.append(timeout)
        if not self.pending:
            return None
        self.pending -= 1
        if self.times is None or self.asked < self.times:
            self.asked += 1
            if self.asked > self.LIMIT:
                raise AssertionError(f"the reader answered {self.LIMIT} S-requests: no bound")
            return self.request
        return Block.i(0, b"\x90\x00").encode()

    def answered(self, kind: SType) -> int:
        return sum(block.is_s(kind, True) for block in self.sent)


GET_SERIAL = bytes.fromhex("00CA00C208")


def test_a_card_asking_for_wtx_forever_is_stopped_at_the_total_wait() -> None:
    card = ScriptedCard(Block.s(SType.WTX, False, b"\x04"))
    terminal = T1Terminal(card, bwt=0.25)  # each request asks for 4 x 0.25 = 1 s more
    with pytest.raises(CardStalledError, match=r"asked for more time past 300 s of waiting "
                                               r"time extensions .* reset it"):
        terminal.transceive(GET_SERIAL)
    # every second up to the cap is granted, and not one more
    assert card.answered(SType.WTX) == terminal.stats.wtx == int(MAX_WTX_WAIT) == 300
    assert card.asked == 301
    assert sum(card.waits) == 0.25 + MAX_WTX_WAIT  # the first BWT, then what WTX granted


def test_a_card_asking_for_a_new_ifsc_forever_is_stopped() -> None:
    card = ScriptedCard(Block.s(SType.IFS, False, b"\x20"))
    terminal = T1Terminal(card, bwt=0.01)
    with pytest.raises(CardStalledError, match=r"sent S\(IFS request\) 5 times in one "
                                               r"command \(at most 4\)"):
        terminal.transceive(GET_SERIAL)
    assert card.answered(SType.IFS) == MAX_IFS_REQUESTS == 4


def test_the_wait_cap_is_the_readers_to_choose() -> None:
    card = ScriptedCard(Block.s(SType.WTX, False, b"\x01"))
    terminal = T1Terminal(card, bwt=1.5, max_wtx_wait=10)
    with pytest.raises(CardStalledError, match="past 10 s"):
        terminal.transceive(GET_SERIAL)
    assert card.answered(SType.WTX) == 6  # 9 s granted; a seventh would make 10.5


@pytest.mark.parametrize(("request_block", "times"), [
    (Block.s(SType.WTX, False, b"\x04"), 300),  # exactly the cap: 300 s
    (Block.s(SType.WTX, False, b"\x01"), 7),
    (Block.s(SType.IFS, False, b"\x20"), MAX_IFS_REQUESTS),
], ids=["wtx-up-to-the-cap", "a-few-wtx", "ifs-up-to-the-limit"])
def test_a_card_that_asks_within_the_bounds_gets_its_answer(request_block: Block,
                                                            times: int) -> None:
    card = ScriptedCard(request_block, times)
    terminal = T1Terminal(card, bwt=0.25)
    assert terminal.transceive(GET_SERIAL) == b"\x90\x00"
    assert card.answered(request_block.stype) == times
    assert terminal.stats.retransmissions == 0


def test_a_slow_command_on_the_card_engine_with_many_wtx_executes_once() -> None:
    class VerySlow(MemoryLine):
        """The card engine asks for WTX again each time the terminal grants one, 50 times,
        and only then hands back the answer."""

        def __init__(self) -> None:
            super().__init__(answer)
            self.left, self.running = 50, b""

        def send(self, data: bytes) -> None:
            out = self.card.receive(data)
            self.outbox.append(out.send)
            if out.execute is not None:
                self.executed.append(out.execute)
                self.running = out.execute
            elif not Block.decode(data).is_s(SType.WTX, True):
                return
            if self.left:
                self.left -= 1
                self.outbox.append(self.card.request_wtx(2).send)
            else:
                self.outbox.append(self.card.executed(answer(self.running),
                                                      self.card.generation).send)

    line = VerySlow()
    terminal = T1Terminal(line, ifsc=254, bwt=0.01)
    command = extended(10, 10)
    assert terminal.transceive(command) == answer(command)
    assert terminal.stats.wtx == 50
    assert line.executed == [command]
    # the next command starts from nothing: the budget is per command
    line.left = 50
    assert terminal.transceive(command) == answer(command)
    assert terminal.stats.wtx == 100


@pytest.mark.parametrize("size", [32, 0])  # 32: the IFSD until negotiated
def test_a_response_chained_forever_is_stopped(size: int) -> None:
    class Chatty:
        """Answers every block with the next I-block of an endless chain (M = 1)."""

        def __init__(self) -> None:
            self.ns, self.pending, self.blocks = 0, 0, 0

        def send(self, data: bytes) -> None:
            self.pending += 1

        def receive(self, timeout: float) -> bytes | None:
            if not self.pending:
                return None
            self.pending -= 1
            self.blocks += 1
            assert self.blocks <= ScriptedCard.LIMIT, "the reader took an endless chain"
            block = Block.i(self.ns, bytes(size), more=True)
            self.ns ^= 1
            return block.encode()

    card = Chatty()
    terminal = T1Terminal(card, bwt=0.01, max_response=2000)
    with pytest.raises(CardStalledError, match="chained a response past 2000 bytes"):
        terminal.transceive(GET_SERIAL)
    assert card.blocks == (2000 // 32 + 1 if size else 2001)
