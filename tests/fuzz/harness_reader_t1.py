"""Fuzz harness for the reader's half of T=1 (terminal/t1.py): `T1Terminal` against a card
whose every block comes from the input.

Input layout:

    byte 0      b0: CRC instead of LRC; b1: negotiate IFSD first; b2: S(RESYNCH) after the
                command; b4..b3: max_retries 0..3; b7..b5: IFSC = 1 + 36 x value
    byte 1      n: the command APDU is bytes 2 .. 2 + n (the rest of the input if shorter)
    then        the card's script, entries read in turn each time the terminal listens:
                e % 3 == 0   silence (BWT runs out)
                e % 3 == 1   raw bytes: n (1 byte), n bytes
                e % 3 == 2   a block with its EDC made right: NAD, PCB, n, n bytes of INF
                At the end the script starts over (a card that repeats itself forever);
                an empty script is a silent card.

The declared errors are `ReaderError`'s family (`LineProtocolError`, `RetryLimitError`,
`CardStalledError`): a card that misbehaves ends the command with one of them. Invariants:
- nothing else escapes, and the command ends: at most MAX_RECEIVES blocks are listened for
  (the bounds of docs/serial.md, with this harness's small settings, allow far fewer);
- every block the terminal sends is valid, from the terminal (no S(WTX request)), and its
  I-blocks fit the card's IFSC as the terminal knows it at that moment;
- a response returned is at most `max_response` bytes.
"""

from __future__ import annotations

from card_applet.atr import Edc
from card_applet.t1 import MAX_INF, Block, BlockError, Kind, SType, epilogue
from terminal.errors import ReaderError
from terminal.t1 import T1Terminal

MAX_RESPONSE = 300
MAX_WTX_WAIT = 8.0
BWT = 1.0  # simulated: the link never sleeps
MAX_RECEIVES = 20_000


class Finding(AssertionError):
    """An input that breaks an invariant."""


class ScriptedCard:
    """A `BlockLink` whose answers are the input's script, replayed forever."""

    def __init__(self, script: list[bytes | None], edc: Edc) -> None:
        self.script, self.edc = script, edc
        self.terminal: T1Terminal | None = None
        self.at = 0
        self.receives = 0

    def send(self, data: bytes) -> None:
        try:
            block = Block.decode(data, self.edc)
        except BlockError as exc:
            raise Finding(f"the terminal sent an invalid block {data.hex()}: {exc}") from exc
        if block.is_s(SType.WTX, False):
            raise Finding("the terminal sent S(WTX request): only the card asks for time")
        assert self.terminal is not None
        if block.kind is Kind.I and len(block.inf) > self.terminal.ifsc:
            raise Finding(f"I-block of {len(block.inf)} bytes for IFSC {self.terminal.ifsc}")

    def receive(self, timeout: float) -> bytes | None:
        self.receives += 1
        if self.receives > MAX_RECEIVES:
            raise Finding(f"the terminal listened {MAX_RECEIVES} times in one command")
        if not self.script:
            return None
        entry = self.script[self.at % len(self.script)]
        self.at += 1
        return entry


def parse_script(data: bytes, edc: Edc) -> list[bytes | None]:
    script: list[bytes | None] = []
    at = 0
    while at < len(data):
        e = data[at] % 3
        at += 1
        if e == 0:
            script.append(None)
            continue
        head = data[at : at + (1 if e == 1 else 3)]
        if len(head) < (1 if e == 1 else 3):
            break
        body = data[at + len(head) : at + len(head) + head[-1]]
        at += len(head) + len(body)
        if e == 1:
            script.append(body)
        else:
            raw = bytes((head[0], head[1], len(body))) + body
            script.append(raw + epilogue(edc, raw))
    return script


def run_one(data: bytes) -> None:
    if len(data) < 2:
        return
    setup, size = data[0], data[1]
    edc = Edc.CRC if setup & 1 else Edc.LRC
    apdu = data[2 : 2 + size]
    card = ScriptedCard(parse_script(data[2 + len(apdu) :], edc), edc)
    terminal = T1Terminal(card, ifsc=1 + 36 * (setup >> 5), edc=edc, bwt=BWT,
                          max_retries=setup >> 3 & 3, max_wtx_wait=MAX_WTX_WAIT,
                          max_response=MAX_RESPONSE)
    card.terminal = terminal
    try:
        if setup & 2:
            terminal.negotiate_ifsd(MAX_INF)
        card.receives = 0
        response = terminal.transceive(apdu)
        if len(response) > MAX_RESPONSE:
            raise Finding(f"a response of {len(response)} bytes passed")
        if setup & 4:
            card.receives = 0
            terminal.resynch()
    except ReaderError:
        pass  # the declared end of a misbehaving card


# -- seeds ------------------------------------------------------------------------------------


def _block(block: Block) -> bytes:
    return bytes((2, block.nad, block.pcb, len(block.inf))) + block.inf


def _input(setup: int, apdu: bytes, *script: bytes) -> bytes:
    return bytes((setup, len(apdu))) + apdu + b"".join(script)


GET = bytes.fromhex("00CA00C208")
LONG = bytes.fromhex("802A8680") + bytes((200,)) + bytes(200)
SILENCE = b"\x00"


def seeds() -> dict[str, bytes]:
    ok = b"\x90\x00"
    ifsc254 = 7 << 5  # 1 + 36 x 7 = 253
    return {
        "one-apdu": _input(ifsc254, GET, _block(Block.i(0, ok))),
        "chain-out": _input(1 << 5, LONG, *[_block(Block.r(n & 1)) for n in range(1, 6)],
                            _block(Block.i(0, ok))),
        "chain-in": _input(ifsc254, GET, _block(Block.i(0, bytes(30), more=True)),
                           _block(Block.i(1, bytes(30), more=True)), _block(Block.i(0, ok))),
        "ifsd-wtx": _input(ifsc254 | 2, GET, _block(Block.s(SType.IFS, True, b"\xfe")),
                           _block(Block.s(SType.WTX, inf=b"\x02")), _block(Block.i(0, ok))),
        "ifs-mid-chain": _input(3 << 5, LONG, _block(Block.s(SType.IFS, inf=b"\x20")),
                                *[_block(Block.r(n & 1)) for n in range(1, 9)],
                                _block(Block.i(0, ok))),
        "errors-resynch": _input(ifsc254 | 4 | 3 << 3, GET, SILENCE, b"\x01\x04\x00\x00\x05\x00",
                                 _block(Block.r(0)), _block(Block.s(SType.RESYNCH, True))),
        "wtx-forever": _input(ifsc254, GET, _block(Block.s(SType.WTX, inf=b"\x01"))),
        "ifs-forever": _input(ifsc254, GET, _block(Block.s(SType.IFS, inf=b"\x10"))),
        "abort": _input(ifsc254 | 1, GET, _block(Block.s(SType.ABORT))),
        "chain-forever": _input(ifsc254, GET, _block(Block.i(0, bytes(20), more=True)),
                                _block(Block.i(1, bytes(20), more=True))),
    }
