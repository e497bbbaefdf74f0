"""ISO/IEC 7816-3 T=1: the block codec and the card's half of the protocol, sans-IO.

Theory of operation. A block is NAD PCB LEN INF EDC (11.3). `Block` encodes and decodes
them; `decode` raises `BlockError` for anything rule 7.1 calls invalid (bad EDC, LEN 255 or
beyond the receiver's IFS, an undefined PCB), so callers answer with an R-block.

`T1Card` is the card's state machine: whole received blocks go in (`receive`, or
`receive_invalid` when the line delivered garbage or stopped mid-block), and out come the
bytes to send and at most one command APDU to execute. The card loop runs the applet and
hands the response back with `executed`; while the applet works the loop may ask for more
time with `request_wtx`. No clocks or I/O here: timers belong to the loop.

The card never executes a command twice. A command executes when the I-block carrying its
last (or only) part arrives with the expected N(S); a repeated I-block (its N(S) already
seen: our acknowledgement was lost) is answered with what we sent last, never executed
again. A lost or corrupted response is recovered by the terminal's R-block naming the N(S)
it still expects (rule 7.2), to which we re-send the block, not re-run the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from card_applet.atr import Edc, xor

MAX_INF = 254  # LEN 255 is reserved (11.3.2.3)
DEFAULT_IFSD = 32  # the terminal's IFS until it sends S(IFS request) (11.4.2)


class SType(IntEnum):
    """S-block function, PCB b5..b1 (table 14)."""

    RESYNCH = 0x00
    IFS = 0x01
    ABORT = 0x02
    WTX = 0x03


class RError(IntEnum):
    """R-block error indication, PCB b4..b1."""

    NONE = 0
    EDC = 1  # EDC or parity error
    OTHER = 2


class Kind(Enum):
    I = "I"  # noqa: E741 - the standard's name for it
    R = "R"
    S = "S"


class BlockError(ValueError):
    def __init__(self, message: str, error: RError = RError.OTHER) -> None:
        super().__init__(message)
        self.error = error


def crc16(data: bytes) -> int:
    """ISO/IEC 13239 FCS-16 (the CRC the T=1 epilogue names): reflected polynomial 0x8408,
    preset FFFF, complemented. CRC-16/X-25, check value 906E for b"123456789"."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def epilogue(edc: Edc, data: bytes) -> bytes:
    if edc is Edc.LRC:
        return bytes((xor(data),))
    return crc16(data).to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class Block:
    pcb: int
    inf: bytes = b""
    nad: int = 0x00

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def i(cls, ns: int, inf: bytes, more: bool = False, nad: int = 0) -> Block:
        return cls((ns & 1) << 6 | (0x20 if more else 0), inf, nad)

    @classmethod
    def r(cls, nr: int, error: RError = RError.NONE, nad: int = 0) -> Block:
        return cls(0x80 | (nr & 1) << 4 | error, b"", nad)

    @classmethod
    def s(cls, kind: SType, response: bool = False, inf: bytes = b"", nad: int = 0) -> Block:
        return cls(0xC0 | (0x20 if response else 0) | kind, inf, nad)

    # -- fields -----------------------------------------------------------------------------

    @property
    def kind(self) -> Kind:
        if not self.pcb & 0x80:
            return Kind.I
        return Kind.R if not self.pcb & 0x40 else Kind.S

    @property
    def ns(self) -> int:
        return self.pcb >> 6 & 1

    @property
    def more(self) -> bool:
        return bool(self.pcb & 0x20)

    @property
    def nr(self) -> int:
        return self.pcb >> 4 & 1

    @property
    def error(self) -> RError:
        return RError(self.pcb & 0x0F)

    @property
    def stype(self) -> SType:
        return SType(self.pcb & 0x1F)

    @property
    def is_response(self) -> bool:
        return bool(self.pcb & 0x20)

    def is_s(self, kind: SType, response: bool) -> bool:
        return self.kind is Kind.S and self.stype is kind and self.is_response == response

    # -- codec ------------------------------------------------------------------------------

    def encode(self, edc: Edc = Edc.LRC) -> bytes:
        if len(self.inf) > MAX_INF:
            raise ValueError(f"INF of {len(self.inf)} bytes: at most {MAX_INF}")
        head = bytes((self.nad, self.pcb, len(self.inf))) + self.inf
        return head + epilogue(edc, head)

    @classmethod
    def decode(cls, raw: bytes, edc: Edc = Edc.LRC, max_inf: int = MAX_INF) -> Block:
        size = 2 if edc is Edc.CRC else 1
        if len(raw) < 3 + size:
            raise BlockError(f"{len(raw)} bytes: shorter than a block")
        length = raw[2]
        if length == 0xFF:
            raise BlockError("LEN FF is reserved")
        if len(raw) != 3 + length + size:
            raise BlockError(f"LEN {length} but {len(raw)} bytes", RError.EDC)
        body, check = raw[:-size], raw[-size:]
        if epilogue(edc, body) != check:
            raise BlockError("EDC mismatch", RError.EDC)
        block = cls(raw[1], bytes(raw[3 : 3 + length]), raw[0])
        block._check(max_inf)
        return block

    def _check(self, max_inf: int) -> None:
        if len(self.inf) > max_inf:
            raise BlockError(f"INF of {len(self.inf)} bytes exceeds the receiver's IFS {max_inf}")
        if self.nad & 0x88 or (self.nad & 0x07 == self.nad >> 4 & 0x07 and self.nad):
            raise BlockError(f"NAD {self.nad:02X}: VPP bits or SAD = DAD are reserved")
        if self.kind is Kind.R:
            if self.pcb & 0x2C or self.pcb & 0x0F > RError.OTHER or self.inf:
                raise BlockError(f"R-block PCB {self.pcb:02X} undefined")
        elif self.kind is Kind.S:
            if self.pcb & 0x1F > SType.WTX:
                raise BlockError(f"S-block PCB {self.pcb:02X} undefined")
            needs_one = self.stype in (SType.IFS, SType.WTX)
            if len(self.inf) != (1 if needs_one else 0):
                raise BlockError(f"S({self.stype.name}) with {len(self.inf)} INF bytes")

    def __str__(self) -> str:
        if self.kind is Kind.I:
            return f"I({self.ns}{', M' if self.more else ''}) {len(self.inf)} bytes"
        if self.kind is Kind.R:
            tail = "" if self.error is RError.NONE else f", {self.error.name} error"
            return f"R({self.nr}{tail})"
        what = "response" if self.is_response else "request"
        value = f" {self.inf[0]}" if self.inf else ""
        return f"S({self.stype.name} {what}{value})"


def reply_nad(nad: int) -> int:
    """Answer with source and destination swapped (11.3.2.1)."""
    return (nad & 0x07) << 4 | (nad >> 4 & 0x07)


@dataclass(frozen=True, slots=True)
class CardOutput:
    """What the card loop does after a received block: send these bytes, then run `execute`
    (a whole command APDU) on the applet if it is set."""

    send: bytes = b""
    execute: bytes | None = None


@dataclass
class T1Card:
    """The card's half of T=1: blocks in, blocks out (see the module's theory of operation)."""

    ifsc: int = 0xFE  # what we announced in the ATR: the most INF we accept
    edc: Edc = Edc.LRC
    ifsd: int = DEFAULT_IFSD
    expected_ns: int = 0  # the terminal's next N(S)
    next_ns: int = 0  # our next N(S)
    executions: int = 0
    _nad: int = 0
    _rx: bytearray = field(default_factory=bytearray)
    _tx: list[bytes] = field(default_factory=list)  # response parts not yet sent
    _last_sent: bytes = b""
    _last_i: Block | None = None  # our last I-block, re-sent on request
    _busy: bool = False  # a command is executing
    _wtx: Block | None = None  # our S(WTX request) awaiting its response
    _held: bytes | None = None  # a response that finished while a WTX was outstanding
    _generation: int = 0

    # -- events -----------------------------------------------------------------------------

    def reset(self) -> None:
        """After an ATR or a RESYNCH: sequence numbers 0, IFSD back to its default (rule 6)."""
        self.ifsd, self.expected_ns, self.next_ns = DEFAULT_IFSD, 0, 0
        self._rx.clear()
        self._tx.clear()
        self._last_sent, self._last_i = b"", None
        self._busy, self._wtx, self._held = False, None, None
        self._generation += 1  # a command running across a reset answers no one

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def busy(self) -> bool:
        return self._busy

    def receive_invalid(self, error: RError = RError.EDC) -> CardOutput:
        """A block that failed to decode or stopped arriving (CWT): rules 7.1 and 7.2."""
        if self._busy:
            return self._still_busy()
        return self._send(Block.r(self.expected_ns, error, self._nad))

    def receive(self, raw: bytes) -> CardOutput:
        try:
            block = Block.decode(raw, self.edc, self.ifsc)
        except BlockError as exc:
            return self.receive_invalid(exc.error)
        self._nad = reply_nad(block.nad)
        if block.kind is Kind.S:
            return self._on_s(block)
        if self._busy:
            return self._still_busy()
        if block.kind is Kind.R:
            return self._on_r(block)
        return self._on_i(block)

    def executed(self, response: bytes, generation: int) -> CardOutput:
        """The applet's response to the command handed out by `receive`."""
        if generation != self._generation or not self._busy:
            return CardOutput()
        if self._wtx is not None:
            self._held = response
            return CardOutput()
        self._busy = False
        parts = [response[i : i + self.ifsd] for i in range(0, len(response), self.ifsd)]
        self._tx = parts or [b""]
        return self._send_next_part()

    def request_wtx(self, multiplier: int) -> CardOutput:
        """Ask for `multiplier` x BWT more (rule 3); only while a command runs."""
        if not self._busy or self._wtx is not None:
            return CardOutput()
        self._wtx = Block.s(SType.WTX, False, bytes((max(1, min(multiplier, 255)),)), self._nad)
        return self._send(self._wtx)

    def _still_busy(self) -> CardOutput:
        # The terminal spoke while the applet works: its BWT ran out, so our S(WTX request)
        # was lost or never sent. Repeat it (rule 7.2), or ask for one BWT more now.
        if self._wtx is not None:
            return self._send(self._wtx)
        return self.request_wtx(1)

    # -- handlers ---------------------------------------------------------------------------

    def _on_i(self, block: Block) -> CardOutput:
        if self._tx:
            # we are sending a chain: the terminal acknowledges with R-blocks (rule 5)
            return self._send(Block.r(self.expected_ns, RError.OTHER, self._nad))
        if block.ns != self.expected_ns:
            # a repeat of the block we already took: our answer to it was lost
            return CardOutput(self._last_sent) if self._last_sent else self._send(
                Block.r(self.expected_ns, RError.OTHER, self._nad))
        self.expected_ns ^= 1
        self._rx += block.inf
        if block.more:
            return self._send(Block.r(self.expected_ns, nad=self._nad))  # rule 2.2
        command = bytes(self._rx)
        self._rx.clear()
        self._busy = True
        self.executions += 1
        return CardOutput(execute=command)

    def _on_r(self, block: Block) -> CardOutput:
        last = self._last_i
        if last is not None and block.nr == last.ns:
            if len(last.inf) > self.ifsd:  # the terminal lowered IFSD since: cut it again
                self._tx.insert(0, last.inf[self.ifsd :])
                last = self._last_i = Block.i(last.ns, last.inf[: self.ifsd], True, self._nad)
            return self._send(last)  # it did not arrive: once more (rule 7.2)
        if self._tx and last is not None and last.more:
            return self._send_next_part()  # acknowledged (rule 2.2)
        if self._rx:
            return CardOutput(self._last_sent)  # our chaining acknowledgement was lost
        return self._send(Block.r(self.expected_ns, RError.OTHER, self._nad))

    def _on_s(self, block: Block) -> CardOutput:
        if block.is_response:
            if block.stype is SType.WTX and self._wtx is not None and block.inf == self._wtx.inf:
                self._wtx = None
                if self._held is not None:
                    held, self._held = self._held, None
                    return self.executed(held, self._generation)
                return CardOutput()
            return self.receive_invalid(RError.OTHER)
        if block.stype is SType.RESYNCH:
            self.reset()  # rule 6.3: the terminal resynchronises, we start over
            return self._send(Block.s(SType.RESYNCH, True, nad=self._nad))
        if block.stype is SType.IFS:
            size = block.inf[0]
            if not 1 <= size <= MAX_INF:
                return self.receive_invalid(RError.OTHER)
            self.ifsd = size
            return self._send(Block.s(SType.IFS, True, block.inf, self._nad))
        if block.stype is SType.ABORT:
            # rule 9: the terminal abandons the chain in progress
            self._rx.clear()
            self._tx.clear()
            return self._send(Block.s(SType.ABORT, True, nad=self._nad))
        return self.receive_invalid(RError.OTHER)  # S(WTX request) is the card's to send

    # -- output -----------------------------------------------------------------------------

    def _send_next_part(self) -> CardOutput:
        part = self._tx.pop(0)
        if len(part) > self.ifsd:
            # S(IFS request) lowered IFSD mid-chain: it holds for every block after it (rule 4)
            self._tx.insert(0, part[self.ifsd :])
            part = part[: self.ifsd]
        block = Block.i(self.next_ns, part, more=bool(self._tx), nad=self._nad)
        self.next_ns ^= 1
        self._last_i = block
        return self._send(block)

    def _send(self, block: Block) -> CardOutput:
        self._last_sent = block.encode(self.edc)
        return CardOutput(self._last_sent)
