"""How an APDU trace reads, on either side of the reader, and the card's own trace.

One line per command and one per response, logged at TRAFFIC (below DEBUG). Data longer than
64 bytes is elided unless the style asks for all of it (`full`); secret data (card_applet/
secrecy.py) is replaced by its length unless the style shows secrets, which then shows it
whole. The terminal logs `READER SEND command` / `READER RECV response` (terminal/trace.py);
the card logs what it receives and answers, `card SERIAL RECV command` / `card SERIAL SEND
response`, the same way, deciding secrecy from the command as the terminal does.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from card_applet.apdu import ApduFormatError, CommandApdu, ResponseApdu
from card_applet.secrecy import Secrecy
from card_applet.sw import describe
from card_applet.vpcd import Card

TRAFFIC = 5
logging.addLevelName(TRAFFIC, "TRAFFIC")
card_log = logging.getLogger("nettx.card.apdu")

SHOWN = 64  # bytes of data shown before eliding, unless the whole data is asked for


@dataclass(frozen=True, slots=True)
class TraceStyle:
    secrets: bool = False  # show secret data whole (a debugging aid asked for explicitly)
    full: bool = False  # show all of the data, not its first 64 bytes


def shown(data: bytes, secret: bool, style: TraceStyle) -> str:
    if secret and not style.secrets:
        return f"<{len(data)} bytes redacted>"
    # asked-for secrets come whole: the point is to read the plaintext
    if len(data) <= SHOWN or style.full or secret:
        return data.hex(" ").upper()
    return data[:SHOWN].hex(" ").upper() + f" ... ({len(data)} bytes)"


def format_command(cmd: CommandApdu, secret: bool, style: TraceStyle) -> str:
    parts = [f"{cmd.cla:02X} {cmd.ins:02X} {cmd.p1:02X} {cmd.p2:02X}"]
    if cmd.data:
        parts.append(f"Lc={len(cmd.data)} {shown(cmd.data, secret, style)}")
    if cmd.le is not None:
        parts.append(f"Le={cmd.le}")
    return " ".join(parts)


def format_response(resp: ResponseApdu, secret: bool, style: TraceStyle) -> str:
    data = f"{shown(resp.data, secret, style)} " if resp.data else ""
    return f"{data}SW={resp.sw:04X} ({describe(resp.sw)})"


class ExchangeSink(Protocol):
    """Where exchanges are recorded besides the log (terminal/pcap.py's PcapWriter)."""

    def write(self, cmd: CommandApdu, resp: ResponseApdu, *, hide_command: bool = False,
              hide_response: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class CardTrace:
    """What the card process traces: the style of its log lines, and where to record the
    exchanges (None: the log only)."""

    style: TraceStyle = TraceStyle()
    sink: ExchangeSink | None = None


class TracedCard:
    """A card (the applet) whose every exchange is logged and recorded as it is served."""

    def __init__(self, card: Card, name: str, trace: CardTrace) -> None:
        self.card = card
        self.name = name
        self.style = trace.style
        self._sink = trace.sink
        self._secrecy = Secrecy()
        self._lock = threading.Lock()  # the serial card runs the applet on its own thread

    def process(self, command: bytes) -> bytes:
        with self._lock:
            try:
                cmd: CommandApdu | None = CommandApdu.from_bytes(command)
            except ApduFormatError:  # malformed: the applet answers it with a status word
                cmd = None
            secret = self._secrecy.command(cmd or CommandApdu(*command[:4].ljust(4, b"\0")))
            if card_log.isEnabledFor(TRAFFIC):
                text = (format_command(cmd, secret, self.style) if cmd is not None
                        else self._unparsed(command, secret))
                card_log.log(TRAFFIC, "%s RECV %s", self.name, text)
            response = self.card.process(command)
            try:
                resp = ResponseApdu.from_bytes(response)
            except ValueError:  # no status word: nothing an applet answers, but say so
                card_log.log(TRAFFIC, "%s SEND %s (no status word)", self.name,
                             response.hex(" ").upper())
                return response
            redaction = self._secrecy.response(resp)
            if card_log.isEnabledFor(TRAFFIC):
                card_log.log(TRAFFIC, "%s SEND %s", self.name,
                             format_response(resp, redaction.response, self.style))
            if cmd is not None:
                self._record(cmd, resp, redaction.command, redaction.response)
            return response

    def _unparsed(self, command: bytes, secret: bool) -> str:
        header, rest = command[:4], command[4:]
        text = header.hex(" ").upper()
        if rest:
            text += f" {shown(rest, secret, self.style)}"
        return f"{text} (malformed)"

    def _record(self, cmd: CommandApdu, resp: ResponseApdu, hide_command: bool,
                hide_response: bool) -> None:
        if self._sink is None:
            return
        shows = self.style.secrets
        try:
            self._sink.write(cmd, resp, hide_command=hide_command and not shows,
                             hide_response=hide_response and not shows)
        except OSError as exc:  # a full disk stops the recording, never the card
            logging.getLogger("nettx.card").warning("exchange recording stopped: %s", exc)
            self._sink = None

    def power_on(self) -> None:
        with self._lock:
            self._secrecy.reset()
            self.card.power_on()

    def power_off(self) -> None:
        with self._lock:
            self._secrecy.reset()
            self.card.power_off()

    def reset(self) -> None:
        with self._lock:
            self._secrecy.reset()
            self.card.reset()
