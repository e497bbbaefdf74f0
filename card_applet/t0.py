"""ISO/IEC 7816-3 T=0: the card's half of the protocol, sans-IO (bytes in, bytes out).

Theory of operation. T=0 carries a command as a TPDU: a five-byte header CLA INS P1 P2 P3,
then data in one direction, steered by the card's procedure bytes (10.3.3):

    ACK      INS        "send (or receive) all the remaining data bytes"
    ACK      INS ^ FF   "send (or receive) the next data byte only"
    NULL     60         "still working": the reader restarts its work waiting time (WWT)
    SW1 SW2  6x / 9x    the end of the command (6x other than 60)

The card alone knows in which direction a command's data goes (P3 is Lc for one INS, Le for
another): `incoming` says which INS carry data to the card. The mapping (12.2):

- an incoming INS with P3 > 0 is case 3: ACK, P3 data bytes, then the applet runs the APDU
  without Le. A case 4 command travels so too: our applet answers a command without Le that
  has response data with 61xx and hands the data out by GET RESPONSE (case 4S.3);
- an incoming INS with P3 = 00 is case 1 (no data, no Le);
- any other INS is case 2: Le = P3 (00 meaning 256). The applet answers; exactly Le bytes go
  back after an ACK, no data goes as the status word alone, and fewer than Le bytes as 6C Na
  (12.2.3, case 2S.3): the reader then repeats the header with P3 = Na. That repeat is
  answered from the response kept here, not by running the command again, so a command runs
  once however its length is negotiated (GET CHALLENGE hands out the challenge it made).

A command executes when its header (case 1, 2) or its last data byte (case 3) arrives;
`executed` hands the applet's answer back. While it runs the card loop calls `null()` every
WWT/2, so the reader never gives up on a slow command. A TPDU that stops arriving (the reader
went away mid-header or mid-data, or a corrupted P3 promised more data than comes) is dropped
by `abandon()` once the line has been quiet for WWT: nothing is executed.

T=0 has no checksum: a byte corrupted on the line with valid parity is taken as sent
(docs/serial.md, "T=0 and corrupted bytes").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from card_applet.t1 import CardOutput

NULL = 0x60
HEADER_SIZE = 5
SHORT_MAX = 256

# Inter-industry INS (ISO/IEC 7816-4 table 4) whose command carries data to the card (cases
# 3 and 4), and this card's proprietary ones (CLA 80). Every other INS is read as case 2.
INCOMING_INS = frozenset({
    0xA4,  # SELECT
    0x20,  # VERIFY
    0x24,  # CHANGE REFERENCE DATA
    0x2C,  # RESET RETRY COUNTER
    0x22,  # MANAGE SECURITY ENVIRONMENT
    0x2A,  # PERFORM SECURITY OPERATION
    0x88,  # INTERNAL AUTHENTICATE
    0x82,  # EXTERNAL AUTHENTICATE
    0xD6,  # UPDATE BINARY
    0xDC,  # UPDATE RECORD
    0xE2,  # STORE DATA / APPEND RECORD
    0xC2,  # ENVELOPE
    0x50,  # INITIALIZE UPDATE (proprietary)
    0xF0,  # SET STATUS (proprietary)
})
SW_INS_INVALID = b"\x6d\x00"  # INS 6x and 9x cannot be sent under T=0 (10.3.2)
SW_NO_PRECISE_DIAGNOSIS = b"\x6f\x00"


def is_incoming(_cla: int, ins: int) -> bool:
    return ins in INCOMING_INS


class Phase(Enum):
    HEADER = "header"  # collecting CLA INS P1 P2 P3
    DATA = "data"  # collecting P3 data bytes after an ACK
    BUSY = "busy"  # the applet runs the command


@dataclass
class T0Card:
    """The card's half of T=0 (see the module's theory of operation)."""

    incoming: Callable[[int, int], bool] = is_incoming
    #: a test facility: acknowledge every data byte alone (INS ^ FF) instead of all at once
    byte_by_byte: bool = False
    executions: int = 0
    phase: Phase = Phase.HEADER
    _header: bytearray = field(default_factory=bytearray)
    _data: bytearray = field(default_factory=bytearray)
    _case2: bool = False
    _kept: tuple[bytes, bytes] | None = None  # header[:4] + Na, the response: after 6C Na
    _generation: int = 0

    # -- state ------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def busy(self) -> bool:
        return self.phase is Phase.BUSY

    @property
    def at_boundary(self) -> bool:
        """Between TPDUs (or running one): where a line request (reset) may start."""
        return self.phase is Phase.BUSY or (self.phase is Phase.HEADER and not self._header)

    @property
    def wanted(self) -> int:
        """How many bytes the current phase still takes from the reader (0 while busy)."""
        if self.phase is Phase.HEADER:
            return HEADER_SIZE - len(self._header)
        if self.phase is Phase.DATA:
            return self._header[4] - len(self._data)
        return 0

    def reset(self) -> None:
        self.phase = Phase.HEADER
        self._header.clear()
        self._data.clear()
        self._kept = None
        self._generation += 1  # a command running across a reset answers no one

    def abandon(self) -> bool:
        """The reader fell silent mid-TPDU for WWT: drop what came, execute nothing. True if
        there was something to drop."""
        if self.phase is Phase.BUSY or (self.phase is Phase.HEADER and not self._header):
            return False
        self.phase = Phase.HEADER
        self._header.clear()
        self._data.clear()
        return True

    # -- input ------------------------------------------------------------------------------

    def receive(self, data: bytes) -> CardOutput:
        """Bytes from the reader, at most `wanted` of them (the line framer cuts there)."""
        out = CardOutput()
        for byte in data:
            if self.phase is Phase.HEADER:
                self._header.append(byte)
                if len(self._header) == HEADER_SIZE:
                    out = self._on_header()
            elif self.phase is Phase.DATA:
                self._data.append(byte)
                if len(self._data) == self._header[4]:
                    out = self._run(bytes(self._header) + bytes(self._data), case2=False)
                elif self.byte_by_byte:
                    out = CardOutput(bytes((self._header[1] ^ 0xFF,)))
            # bytes while busy: the reader must wait for our answer (half duplex); dropped
        return out

    def _on_header(self) -> CardOutput:
        header = bytes(self._header)
        ins, p3 = header[1], header[4]
        if ins & 0xF0 in (0x60, 0x90):
            return self._finish(SW_INS_INVALID)
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] == header:
            # the reader repeats the header with the P3 our 6C named: the same answer
            return self._answer_case2(kept[1], p3 or SHORT_MAX, header[:4])
        if self.incoming(header[0], ins):
            if p3 == 0:
                return self._run(header[:4], case2=False)  # case 1
            self.phase = Phase.DATA
            self._data.clear()
            ack = ins ^ 0xFF if self.byte_by_byte and p3 > 1 else ins
            return CardOutput(bytes((ack,)))
        return self._run(header, case2=True)  # case 2S: P3 is Le as the applet reads it

    def _run(self, apdu: bytes, *, case2: bool) -> CardOutput:
        self.phase, self._case2 = Phase.BUSY, case2
        self.executions += 1
        return CardOutput(execute=apdu)

    # -- output -----------------------------------------------------------------------------

    def null(self) -> CardOutput:
        """While the command runs: a NULL procedure byte restarts the reader's WWT."""
        return CardOutput(bytes((NULL,))) if self.phase is Phase.BUSY else CardOutput()

    def executed(self, response: bytes, generation: int) -> CardOutput:
        """The applet's response to the command handed out by `receive`."""
        if generation != self._generation or self.phase is not Phase.BUSY:
            return CardOutput()
        header = bytes(self._header)
        if len(response) < 2:
            return self._finish(SW_NO_PRECISE_DIAGNOSIS)
        if self._case2:
            return self._answer_case2(response, header[4] or SHORT_MAX, header[:4])
        if len(response) > 2:
            # case 1 or 3: no Le was sent, so no data may come back (our applet answers 61xx)
            return self._finish(SW_NO_PRECISE_DIAGNOSIS)
        return self._finish(response)

    def _answer_case2(self, response: bytes, ne: int, head: bytes) -> CardOutput:
        data, sw = response[:-2], response[-2:]
        if not data:
            return self._finish(sw)
        if len(data) < ne:
            # 2S.3: the reader asks again with P3 = Na; keep the answer for that repeat
            na = len(data)
            self._kept = (head + bytes((na,)), response)
            return self._finish(bytes((0x6C, na)))
        if len(data) > ne:
            return self._finish(SW_NO_PRECISE_DIAGNOSIS)  # the applet honours Le: never
        ins = head[1]
        if self.byte_by_byte:
            body = b"".join(bytes((ins ^ 0xFF, b)) for b in data)
        else:
            body = bytes((ins,)) + data
        return self._finish(body + sw)

    def _finish(self, send: bytes) -> CardOutput:
        self.phase = Phase.HEADER
        self._header.clear()
        self._data.clear()
        return CardOutput(send)
