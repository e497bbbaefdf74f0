"""Fuzz harness for the card's half of T=1 (card_applet/t1.py): the block codec and `T1Card`.

Input layout: byte 0 sets up the card (b0: CRC instead of LRC; b7..b1: IFSC, 0 meaning 254),
then events, each an op byte and its operands:

    op % 6 == 0   raw bytes from the line: n (1 byte), n bytes -> receive (EDC as it comes)
    op % 6 == 1   a block with its EDC made right: NAD, PCB, n, n bytes of INF -> receive
    op % 6 == 2   the line delivered garbage: receive_invalid(RError(b % 3)) (1 byte b)
    op % 6 == 3   the applet finished: n (1 byte), n bytes of response -> executed, for the
                  running command (op b3 = 0) or for one a reset already orphaned (b3 = 1)
    op % 6 == 4   the card loop wants more time: request_wtx(multiplier) (1 byte)
    op % 6 == 5   reset (ATR or line reset)

The declared error is `BlockError` (from `Block.decode` only; `T1Card` answers it with an
R-block). Invariants (a violation raises `Finding`):
- `Block.decode` raises nothing but `BlockError`, and a block it accepts encodes back to the
  very bytes it came from;
- `T1Card` raises nothing; everything it sends is one valid block, from the card (no S
  request but WTX), with NAD the received one's swapped, INF within the terminal's IFSD;
- a command APDU is handed out only while no other runs, and the card then counts as busy.
"""

from __future__ import annotations

from card_applet.atr import Edc
from card_applet.t1 import MAX_INF, Block, BlockError, Kind, RError, SType, T1Card, epilogue

OPS = 6


class Finding(AssertionError):
    """An input that breaks an invariant."""


def check_decode(raw: bytes, edc: Edc, max_inf: int) -> Block | None:
    try:
        block = Block.decode(raw, edc, max_inf)
    except BlockError:
        return None
    if block.encode(edc) != raw:
        raise Finding(f"{raw.hex()} decodes to {block}, which encodes differently")
    return block


def check_sent(card: T1Card, sent: bytes, ifsd: int) -> None:
    if not sent:
        return
    block = check_decode(sent, card.edc, MAX_INF)
    if block is None:
        raise Finding(f"the card sent an invalid block {sent.hex()}")
    if block.kind is Kind.I and len(block.inf) > ifsd:
        raise Finding(f"the card sent {len(block.inf)} bytes of INF for IFSD {ifsd}")
    if block.kind is Kind.S and not block.is_response and block.stype is not SType.WTX:
        raise Finding(f"the card sent {block}: only the terminal asks for that")


class Run:
    """One input's card, and what the invariants need to remember about it."""

    def __init__(self, setup: int) -> None:
        self.card = T1Card(ifsc=(setup >> 1) or MAX_INF, edc=Edc.CRC if setup & 1 else Edc.LRC)
        self.orphan = self.card.generation - 1

    def feed(self, raw: bytes) -> None:
        ifsd_before, busy_before = self.card.ifsd, self.card.busy
        check_decode(raw, self.card.edc, self.card.ifsc)
        out = self.card.receive(raw)
        # an S(IFS request) answered in this very call changes IFSD for the blocks after it
        check_sent(self.card, out.send, max(ifsd_before, self.card.ifsd))
        if out.execute is not None and (busy_before or not self.card.busy):
            raise Finding("a command handed out while another runs, or not marked running")

    def step(self, op: int, data: bytes, at: int) -> int:
        """Apply the event at data[at] (op already read); the index after its operands."""
        kind = op % OPS
        if kind in (0, 1):
            head = data[at : at + (1 if kind == 0 else 3)]
            if len(head) < (1 if kind == 0 else 3):
                return len(data)
            size = head[-1]
            body = data[at + len(head) : at + len(head) + size]
            at += len(head) + len(body)
            if kind == 0:
                self.feed(body)
            else:
                raw = bytes((head[0], head[1], len(body))) + body
                self.feed(raw + epilogue(self.card.edc, raw))
            return at
        if kind == 2:
            if at >= len(data):
                return at
            check_sent(self.card, self.card.receive_invalid(RError(data[at] % 3)).send,
                       self.card.ifsd)
            return at + 1
        if kind == 3:
            if at >= len(data):
                return at
            size = data[at]
            response = data[at + 1 : at + 1 + size]
            generation = self.orphan if op & 8 else self.card.generation
            out = self.card.executed(response, generation)
            check_sent(self.card, out.send, self.card.ifsd)
            return at + 1 + len(response)
        if kind == 4:
            if at >= len(data):
                return at
            check_sent(self.card, self.card.request_wtx(data[at]).send, self.card.ifsd)
            return at + 1
        self.orphan = self.card.generation
        self.card.reset()
        return at


def run_one(data: bytes) -> None:
    if not data:
        return
    run = Run(data[0])
    at = 1
    while at < len(data):
        op = data[at]
        at = run.step(op, data, at + 1)


# -- seeds ------------------------------------------------------------------------------------


def _block(block: Block) -> bytes:
    """Event 1: the block, EDC added by the harness."""
    return bytes((1, block.nad, block.pcb, len(block.inf))) + block.inf


def _raw(raw: bytes) -> bytes:
    return bytes((0, len(raw))) + raw


def _executed(response: bytes, orphan: bool = False) -> bytes:
    return bytes((3 | (8 if orphan else 0), len(response))) + response


SELECT = bytes.fromhex("00A4040C0AF0455030373931393031")


def seeds() -> dict[str, bytes]:
    ok = b"\x90\x00"
    return {
        "one-apdu": b"\x00" + _block(Block.i(0, SELECT)) + _executed(ok),
        "chain-in": b"\x00" + _block(Block.i(0, SELECT[:8], more=True))
        + _block(Block.i(1, SELECT[8:])) + _executed(bytes(40) + ok),
        "chain-out": b"\x00" + _block(Block.s(SType.IFS, inf=b"\x10"))
        + _block(Block.i(0, SELECT)) + _executed(bytes(40) + ok) + _block(Block.r(1))
        + _block(Block.r(0)) + _block(Block.r(1)),
        "wtx": b"\x00" + _block(Block.i(0, SELECT)) + bytes((4, 3))
        + _block(Block.s(SType.WTX, True, b"\x03")) + _executed(ok),
        "wtx-held": b"\x00" + _block(Block.i(0, SELECT)) + bytes((4, 2)) + _executed(ok)
        + _block(Block.s(SType.WTX, True, b"\x02")),
        "repeat-and-r": b"\x00" + _block(Block.i(0, SELECT)) + _executed(ok)
        + _block(Block.i(0, SELECT)) + _block(Block.r(0)) + bytes((2, 1)),
        "resynch-abort": b"\x00" + _block(Block.i(0, SELECT[:5], more=True))
        + _block(Block.s(SType.ABORT)) + _block(Block.s(SType.RESYNCH))
        + bytes((5,)) + _executed(ok, orphan=True),
        "raw-lrc": b"\x00" + _raw(Block.i(0, SELECT).encode()) + _executed(ok)
        + _raw(bytes.fromhex("00 91 00 91")) + _raw(bytes.fromhex("00 00 FF 00")),
        "crc": b"\x01" + _raw(Block.i(0, SELECT).encode(Edc.CRC)) + _executed(ok)
        + _raw(Block.i(1, SELECT).encode(Edc.CRC)[:-1] + b"\x00"),
        # broke the IFSD invariant: IFSD lowered mid-chain, the card went on at the old size
        "regress-ifsd-mid-chain": b"\x00" + _block(Block.s(SType.IFS, inf=b"\x40"))
        + _block(Block.i(0, SELECT)) + _executed(bytes(200) + ok)
        + _block(Block.s(SType.IFS, inf=b"\x10")) + _block(Block.r(1)) + _block(Block.r(0)),
        "nad-small-ifsc": bytes((16 << 1,)) + _block(Block.i(0, SELECT, nad=0x12))
        + _block(Block.i(0, bytes(20), nad=0x12)) + _executed(ok),
    }
