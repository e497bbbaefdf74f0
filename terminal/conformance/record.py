"""What a conformance check records as it runs (its exchanges, its deviations) and the two ways
it stops early: the types both the checks' model (model.py) and their one way to the card
(probe.py) need, below both.
"""

from __future__ import annotations

from dataclasses import dataclass

from card_applet.apdu import ApduFormatError, CommandApdu
from card_applet.secrecy import is_secret


class NotApplicable(Exception):
    pass


class Failed(Exception):
    """The card did something wrong; `seen` and `preferred` when a status word shows it."""

    def __init__(self, reason: str, seen: int | None = None,
                 preferred: tuple[int, ...] = ()) -> None:
        super().__init__(reason)
        self.seen, self.preferred = seen, preferred


@dataclass(frozen=True, slots=True)
class Deviation:
    """A command refused with `seen` where the clause prefers one of `preferred`."""

    what: str
    seen: int
    preferred: tuple[int, ...]

    def render(self) -> str:
        wanted = " or ".join(f"{w:04X}" for w in self.preferred)
        return f"{self.what}: {self.seen:04X} ({wanted} preferred)"


@dataclass(frozen=True, slots=True)
class Exchange:
    """One command and its response, as reports show them.

    Reports are files that travel (CI artefacts, bug reports), so the data of a command that
    carries a secret (VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER, personalisation:
    `card_applet.secrecy.is_secret`) is cut out when the exchange is recorded, as the APDU trace
    does: `command` keeps the header, Lc and Le, `redacted` says where the data was and how
    long it was. Even a wrong PIN is secret: the suite derives it from the right one.
    """

    command: bytes
    response: bytes | None  # None: the transport failed
    redacted: tuple[int, int] | None = None  # (offset in command, length) of the data cut out

    @classmethod
    def record(cls, command: bytes, response: bytes | None) -> Exchange:
        if len(command) < 4 or not is_secret(CommandApdu(*command[:4])):
            return cls(command, response)
        try:
            parsed = CommandApdu.from_bytes(command)
            data_at, size = (7 if parsed.extended else 5), len(parsed.data)
        except ApduFormatError:  # malformed: which bytes are data is unknown: all after the header
            data_at, size = 4, len(command) - 4
        if size == 0:
            return cls(command, response)
        kept = command[:data_at] + command[data_at + size :]
        return cls(kept, response, (data_at, size))

    def render(self) -> str:
        if self.redacted is None:
            sent = _hex(self.command)
        else:
            at, size = self.redacted
            parts = (_hex(self.command[:at]), f"<{size} bytes redacted>", _hex(self.command[at:]))
            sent = " ".join(part for part in parts if part)
        out = "<no response>" if self.response is None else _hex(self.response)
        return f"> {sent}\n< {out}"


def _hex(data: bytes) -> str:
    return data.hex(" ").upper()
