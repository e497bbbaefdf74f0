"""The APDU protocol stack over any Reader: length formatting, command chaining,
response chaining (61xx / GET RESPONSE), Le correction (6Cxx), trace and status checks.

Callers say `send_apdu(cla, ins, p1, p2, data, le)` and never build length bytes by hand.
The 61xx / 6Cxx following lives here only: `nettx card apdu` (terminal/apdu_script.py) uses
it too, without chaining and with its own bound.
"""

from __future__ import annotations

from card_applet.apdu import SHORT_MAX_DATA, SHORT_MAX_LE, CommandApdu, ResponseApdu
from card_applet.sw import SW
from card_applet.vocabulary import Ins, command_name
from terminal.errors import EndlessResponseError, ReaderError, apdu_error
from terminal.reader import Reader
from terminal.trace import trace_command, trace_response

MAX_RESPONSE = 1 << 20  # a card that keeps saying 61xx past 1 MiB is broken


def channel_class(cla: int) -> int:
    """The inter-industry CLA of the command's logical channel (ISO 7816-4 5.4.1): GET
    RESPONSE is inter-industry (11.4.1), so CLA 00 after CLA 80, and it must go on the channel
    whose answer it continues."""
    if 0x40 <= cla <= 0x7F:  # further inter-industry class: channels 4..19 in b4-b1
        return 0x40 | cla & 0x0F
    return cla & 0x03  # first inter-industry class (and proprietary ones coded alike): b2-b1


class ApduProtocol:
    """`chaining`: split a command too long for a short-only reader into a chain (off for
    raw scripts, which send what they are given). `max_response` bounds the bytes collected
    through 61xx, `max_get_responses` (if given) the GET RESPONSEs sent for one command."""

    def __init__(self, reader: Reader, *, extended: bool | None = None, chaining: bool = True,
                 max_response: int = MAX_RESPONSE, max_get_responses: int | None = None) -> None:
        self.reader = reader
        self.extended = reader.extended_length if extended is None else extended
        self.chaining = chaining
        self.max_response = max_response
        self.max_get_responses = max_get_responses
        #: set when the reader lost the card (removed, dropped, timed out): whatever answers
        #: next may be another card, so what was proved about this one no longer holds
        self.card_lost = False

    def exchange(self, cmd: CommandApdu) -> ResponseApdu:
        """One command APDU as it is, one response APDU as the card gave it; traced."""
        reader = self.reader
        trace_command(reader.name, cmd)
        try:
            raw = reader.transmit(cmd.to_bytes())
        except ReaderError:
            self.card_lost = True
            raise
        resp = ResponseApdu.from_bytes(raw)
        trace_response(reader.name, resp)
        return resp

    def send(self, cmd: CommandApdu) -> ResponseApdu:
        """Send one logical command; returns the whole response with its final SW."""
        if self.chaining and not self.extended and cmd.needs_extended:
            resp = self._send_chained(cmd)
        else:
            resp = self.exchange(cmd)
        if resp.sw1 == 0x6C:  # ISO 7816-3 T=0 rule, also seen on T=1 cards: re-issue with Le
            resp = self.exchange(CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data,
                                             resp.sw2 or SHORT_MAX_LE, cmd.extended))
        if resp.sw1 != 0x61:  # the whole answer came at once: nothing to collect
            return resp
        return self._collect(channel_class(cmd.cla), resp)

    def _collect(self, cla: int, resp: ResponseApdu) -> ResponseApdu:
        """Follow 61xx with GET RESPONSE (Le = xx) on `cla` until another status word."""
        data = bytearray(resp.data)
        sent = 0
        while resp.sw1 == 0x61:
            if len(data) > self.max_response or sent == self.max_get_responses:
                raise EndlessResponseError(resp.sw, sent)
            resp = self.exchange(CommandApdu(cla, Ins.GET_RESPONSE, 0, 0,
                                             le=resp.sw2 or SHORT_MAX_LE))
            sent += 1
            data += resp.data
        return ResponseApdu(bytes(data), resp.sw)

    def _send_chained(self, cmd: CommandApdu) -> ResponseApdu:
        chunks = [cmd.data[i : i + SHORT_MAX_DATA] for i in range(0, len(cmd.data),
                                                                   SHORT_MAX_DATA)] or [b""]
        le = min(cmd.le, SHORT_MAX_LE) if cmd.le is not None else None
        for chunk in chunks[:-1]:
            resp = self.exchange(CommandApdu(cmd.cla | 0x10, cmd.ins, cmd.p1, cmd.p2, chunk))
            if resp.sw != SW.OK:
                return resp
        return self.exchange(CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, chunks[-1], le))

    def send_apdu(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
                  le: int | None = None, *, name: str = "") -> bytes:
        """Send and require 9000; any other status raises the matching ApduError, which
        names the command as `name` or, by default, as the card vocabulary does."""
        resp = self.send(CommandApdu(cla, ins, p1, p2, data, le))
        if resp.sw != SW.OK:
            raise apdu_error(resp.sw, name or command_name(cla, ins))
        return resp.data
