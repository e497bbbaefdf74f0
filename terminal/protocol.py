"""The APDU protocol stack over any Reader: length formatting, command chaining,
response chaining (61xx / GET RESPONSE), Le correction (6Cxx), trace and status checks.

Callers say `send_apdu(cla, ins, p1, p2, data, le)` and never build length bytes by hand.
"""

from __future__ import annotations

from card_applet.apdu import SHORT_MAX_DATA, SHORT_MAX_LE, CommandApdu, ResponseApdu
from card_applet.sw import SW
from terminal.errors import ApduError, ReaderError, apdu_error
from terminal.reader import Reader
from terminal.trace import trace_command, trace_response

GET_RESPONSE = 0xC0
MAX_RESPONSE = 1 << 20  # a card that keeps saying 61xx past 1 MiB is broken


class ApduProtocol:
    def __init__(self, reader: Reader, *, extended: bool | None = None) -> None:
        self.reader = reader
        self.extended = reader.extended_length if extended is None else extended
        #: set when the reader lost the card (removed, dropped, timed out): whatever answers
        #: next may be another card, so what was proved about this one no longer holds
        self.card_lost = False

    def _exchange(self, cmd: CommandApdu) -> ResponseApdu:
        trace_command(self.reader.name, cmd)
        try:
            raw = self.reader.transmit(cmd.to_bytes())
        except ReaderError:
            self.card_lost = True
            raise
        resp = ResponseApdu.from_bytes(raw)
        trace_response(self.reader.name, resp)
        return resp

    def send(self, cmd: CommandApdu) -> ResponseApdu:
        """Send one logical command; returns the whole response with its final SW."""
        if cmd.needs_extended and not self.extended:
            resp = self._send_chained(cmd)
        else:
            resp = self._exchange(cmd)
        if resp.sw1 == 0x6C:  # ISO 7816-3 T=0 rule, also seen on T=1 cards: re-issue with Le
            resp = self._exchange(CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data,
                                              resp.sw2 or SHORT_MAX_LE, cmd.extended))
        data = bytearray(resp.data)
        while resp.sw1 == 0x61:
            if len(data) > MAX_RESPONSE:
                raise ApduError(resp.sw, "GET RESPONSE")
            # GET RESPONSE is inter-industry (ISO 7816-4 11.4.1): CLA 00 even after CLA 80
            resp = self._exchange(CommandApdu(0x00, GET_RESPONSE, 0, 0,
                                              le=resp.sw2 or SHORT_MAX_LE))
            data += resp.data
        return ResponseApdu(bytes(data), resp.sw)

    def _send_chained(self, cmd: CommandApdu) -> ResponseApdu:
        chunks = [cmd.data[i : i + SHORT_MAX_DATA] for i in range(0, len(cmd.data),
                                                                   SHORT_MAX_DATA)] or [b""]
        le = min(cmd.le, SHORT_MAX_LE) if cmd.le is not None else None
        for chunk in chunks[:-1]:
            resp = self._exchange(CommandApdu(cmd.cla | 0x10, cmd.ins, cmd.p1, cmd.p2, chunk))
            if resp.sw != SW.OK:
                return resp
        return self._exchange(CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, chunks[-1], le))

    def send_apdu(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
                  le: int | None = None, *, name: str = "") -> bytes:
        """Send and require 9000; any other status raises the matching ApduError."""
        resp = self.send(CommandApdu(cla, ins, p1, p2, data, le))
        if resp.sw != SW.OK:
            raise apdu_error(resp.sw, name or f"INS {ins:02X}")
        return resp.data
