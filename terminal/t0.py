"""ISO/IEC 7816-3 T=0, the interface device's half, over any `ByteLink`.

Theory of operation. `T0Terminal.transceive` maps a short command APDU onto TPDUs (12.2)
and returns the response APDU the card would have given over T=1:

    case 1   CLA INS P1 P2 00                      -> SW1 SW2
    case 2S  CLA INS P1 P2 Le (00: 256)            -> data, SW1 SW2; on 6C Na the header is
                                                      sent again with P3 = Na (2S.3)
    case 3S  CLA INS P1 P2 Lc, data after an ACK   -> SW1 SW2
    case 4S  case 3S, then on 61 xx a GET RESPONSE (00 C0 00 00 P3 = min(Ne, xx)) as case 2S

Each TPDU is steered by the card's procedure bytes (10.3.3): INS (all the remaining data),
INS ^ FF (the next data byte only), 60 (NULL: wait one more WWT) and SW1 (6x but 60, or 9x)
followed by SW2. Anything else is a protocol error the reader names: `LineProtocolError`.

An extended APDU (Nc > 255 or Ne > 256) is refused with `ApduNotMappableError` before any
byte is sent: 7816-3 carries it in ENVELOPE commands, which this card does not implement;
the APDU layer (`ApduProtocol`, with `extended_length` False) sends such a command chained
and collects such a response by GET RESPONSE instead.

Timers and bounds. Every character the card sends must come within WWT of the one before
(10.2); a NULL grants one more WWT. A card that keeps sending NULLs is bounded: past
`max_null_wait` seconds granted in one command the command fails with `CardStalledError`.
T=0 has no checksum and no retransmission: whatever goes wrong fails the command, whose
outcome is then unknown (the caller resets the card before the next one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from card_applet.apdu import SHORT_MAX_DATA, SHORT_MAX_LE, ApduFormatError, CommandApdu
from card_applet.t0 import NULL
from terminal.errors import ApduNotMappableError, CardStalledError, LineProtocolError

log = logging.getLogger(__name__)

GET_RESPONSE = 0xC0
# As for T=1's S(WTX): ISO sets no limit on NULLs. The card in this repository sends one
# every WWT/2, so 300 s granted is at least 150 s of work.
MAX_NULL_WAIT = 300.0


class ByteLink(Protocol):
    def send(self, data: bytes) -> None: ...

    def read(self, size: int, timeout: float) -> bytes:
        """Up to `size` bytes, each within `timeout` of the one before; fewer on a timeout."""


@dataclass
class T0Stats:
    tpdus: int = 0
    nulls: int = 0
    timeouts: int = 0
    reissues: int = 0  # 6C Na: the header sent again with P3 = Na
    get_responses: int = 0  # case 4: 61 xx answered by GET RESPONSE
    apdus: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


def is_sw1(byte: int) -> bool:
    return byte != NULL and byte & 0xF0 in (0x60, 0x90)


class T0Terminal:
    def __init__(self, link: ByteLink, *, wwt: float, name: str = "T=0",
                 max_null_wait: float = MAX_NULL_WAIT) -> None:
        self.link, self.wwt, self.name = link, wwt, name
        self.max_null_wait = max_null_wait
        self.stats = T0Stats()
        # NULLs honoured per command: each grants one WWT (counted, not summed in floats)
        self.null_budget = int(max_null_wait / wwt + 1e-9)
        self._nulls = 0

    def transceive(self, apdu: bytes) -> bytes:
        try:
            cmd = CommandApdu.from_bytes(apdu)
        except ApduFormatError as exc:
            raise ApduNotMappableError(f"{self.name}: malformed APDU {apdu.hex(' ').upper()}: "
                                       "T=0 cannot map it to a TPDU") from exc
        if len(cmd.data) > SHORT_MAX_DATA or (cmd.le or 0) > SHORT_MAX_LE:
            raise ApduNotMappableError(
                f"{self.name}: T=0 carries short APDUs only (Nc {len(cmd.data)}, Ne "
                f"{cmd.le}): send the command chained and collect the response by GET "
                "RESPONSE (ENVELOPE is not implemented)")
        self.stats.apdus += 1
        self._nulls = 0
        head = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2))
        if not cmd.data:
            return self._case2(head, cmd.le)
        _, sw = self._tpdu(head + bytes((len(cmd.data),)), send=cmd.data)
        if cmd.le is None or sw[0] != 0x61:
            return sw  # case 3S, or case 4S.2: the card gave no data
        self.stats.get_responses += 1
        return self._case2(bytes((0x00, GET_RESPONSE, 0x00, 0x00)),
                           min(cmd.le, sw[1] or SHORT_MAX_LE))

    def _case2(self, head: bytes, le: int | None) -> bytes:
        """Case 1 (le None: P3 00 and nothing to receive) or case 2S."""
        ne = le or 0
        data, sw = self._tpdu(head + bytes((ne % SHORT_MAX_LE,)), receive=ne)
        if ne and sw[0] == 0x6C and not data:
            self.stats.reissues += 1
            na = sw[1] or SHORT_MAX_LE
            data, sw = self._tpdu(head + bytes((sw[1],)), receive=na)
        return data + sw

    # -- one TPDU ---------------------------------------------------------------------------

    def _read1(self, what: str) -> int:
        byte = self.link.read(1, self.wwt)
        if not byte:
            self.stats.timeouts += 1
            raise LineProtocolError(
                f"{self.name}: no {what} within the work waiting time ({self.wwt:.2f} s): "
                "the command's outcome is unknown")
        self.stats.bytes_received += 1
        return byte[0]

    def _tpdu(self, header: bytes, *, send: bytes = b"", receive: int = 0) -> tuple[bytes, bytes]:
        self.stats.tpdus += 1
        log.debug("%s -> TPDU %s", self.name, header.hex(" "))
        self._send(header)
        ins, sent, got = header[1], 0, bytearray()
        while True:
            pb = self._read1("procedure byte")
            if pb == NULL:
                self.stats.nulls += 1
                self._nulls += 1
                if self._nulls > self.null_budget:
                    raise CardStalledError(
                        f"{self.name}: the card sent NULL past {self.max_null_wait:g} s of work "
                        f"waiting time ({self.stats.nulls} NULLs); stopped waiting. It is "
                        "still in the command, whose outcome is unknown: reset it")
                continue
            if is_sw1(pb):
                sw = bytes((pb, self._read1("SW2")))
                self._check_end(header, sw, sent, len(send), len(got), receive)
                log.debug("%s <- %d bytes, SW %s", self.name, len(got), sw.hex())
                return bytes(got), sw
            if pb not in (ins, ins ^ 0xFF):
                raise LineProtocolError(
                    f"{self.name}: procedure byte {pb:02X} after {header.hex(' ').upper()} is "
                    f"none of ACK ({ins:02X}), ACK for one byte ({ins ^ 0xFF:02X}), NULL (60) "
                    "or SW1 (6x, 9x)")
            one = pb != ins
            if send:
                left = len(send) - sent
                if not left:
                    raise self._too_many(pb, header, "sent")
                n = 1 if one else left
                self._send(send[sent : sent + n])
                sent += n
            elif receive:
                left = receive - len(got)
                if not left:
                    raise self._too_many(pb, header, "received")
                n = 1 if one else left
                chunk = self.link.read(n, self.wwt)
                self.stats.bytes_received += len(chunk)
                got += chunk
                if len(chunk) < n:
                    self.stats.timeouts += 1
                    raise LineProtocolError(
                        f"{self.name}: {len(got)} of {receive} data bytes, then nothing within "
                        f"the work waiting time ({self.wwt:.2f} s)")
            else:
                raise self._too_many(pb, header, "sent (P3 = 00)")

    def _too_many(self, pb: int, header: bytes, done: str) -> LineProtocolError:
        return LineProtocolError(f"{self.name}: procedure byte {pb:02X} asks for data after "
                                 f"{header.hex(' ').upper()}, but all P3 = {header[4]} bytes "
                                 f"are {done}")

    def _check_end(self, header: bytes, sw: bytes, sent: int, to_send: int, got: int,
                   to_receive: int) -> None:
        """A length that disagrees: the card ended the command with success after taking part
        of the data, or after giving part of what P3 announced (10.3.3)."""
        success = sw[0] in (0x90, 0x61)
        if to_send and 0 < sent < to_send and success:
            raise LineProtocolError(
                f"{self.name}: SW {sw.hex().upper()} after {sent} of the {to_send} data bytes "
                f"of {header.hex(' ').upper()}: the lengths disagree")
        if to_receive and 0 < got < to_receive:
            raise LineProtocolError(
                f"{self.name}: SW {sw.hex().upper()} after {got} of the {to_receive} data bytes "
                f"P3 asked for in {header.hex(' ').upper()}: the lengths disagree")

    def _send(self, data: bytes) -> None:
        self.stats.bytes_sent += len(data)
        self.link.send(data)
