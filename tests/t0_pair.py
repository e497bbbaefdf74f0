"""T=0 in memory: the reader's `T0Terminal` wired to the card's `T0Card` and an applet, with
a hook on each byte the card sends (to corrupt or replace it) and on each byte the reader
sends. The card runs each command at once (no clocks), so reads never wait."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from card_applet.t0 import T0Card
from terminal.t0 import T0Terminal

Tamper = Callable[[int, int], int]  # (index of the byte in its direction, byte) -> byte


class Applet(Protocol):
    def process(self, command: bytes) -> bytes: ...


def untouched(_index: int, byte: int) -> int:
    return byte


@dataclass
class MemoryLine:
    """A `ByteLink` whose far end is a T0Card over `applet`."""

    applet: Applet
    card: T0Card = field(default_factory=T0Card)
    to_card: Tamper = untouched
    to_reader: Tamper = untouched
    commands: list[bytes] = field(default_factory=list)  # what the applet executed
    _out: bytearray = field(default_factory=bytearray)
    _sent: int = 0
    _received: int = 0

    def send(self, data: bytes) -> None:
        for byte in data:
            byte = self.to_card(self._sent, byte)
            self._sent += 1
            if not self.card.wanted:
                continue  # the card is busy: what a real card would drop
            out = self.card.receive(bytes((byte,)))
            self._emit(out.send)
            if out.execute is not None:
                self.commands.append(out.execute)
                answer = self.applet.process(out.execute)
                self._emit(self.card.executed(answer, self.card.generation).send)

    def _emit(self, data: bytes) -> None:
        for byte in data:
            self._out.append(self.to_reader(self._received, byte))
            self._received += 1

    def read(self, size: int, timeout: float) -> bytes:
        chunk = bytes(self._out[:size])
        del self._out[:size]
        return chunk


def pair(applet: Applet, **line: object) -> tuple[T0Terminal, MemoryLine]:
    link = MemoryLine(applet, **line)  # type: ignore[arg-type]
    return T0Terminal(link, wwt=0.01, name="T=0 memory"), link
