"""Both halves of T=1 wired together in memory (as h11's ConnectionPair): the terminal's
engine against the card's, with blocks lost or corrupted on the way by a seeded schedule."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import pytest

from card_applet.atr import Edc
from card_applet.t1 import Block, Kind, SType, T1Card
from terminal.errors import RetryLimitError
from terminal.t1 import T1Terminal

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


def test_card_ifs_request_changes_what_the_terminal_sends() -> None:
    terminal, line = pair()
    line.outbox.append(Block.s(SType.IFS, False, b"\x40").encode())
    terminal.transceive(extended(300, 1))
    assert terminal.ifsc == 0x40


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
