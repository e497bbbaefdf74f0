"""What a conformance check is, and what it yields.

A check is a small named function with the ISO/IEC 7816-4 clause it follows. It returns a
one-line reason on success, raises `NotApplicable` when the card does not offer what it needs
(with the reason), and raises `Failed` when the card answers against the clause.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from card_applet.apdu import ApduFormatError, CommandApdu
from card_applet.secrecy import is_secret

if TYPE_CHECKING:
    from terminal.conformance.probe import Probe


class Outcome(Enum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"
    ERROR = "error"  # the check could not finish: the reader or the card went away


class NotApplicable(Exception):
    pass


class Failed(Exception):
    pass


CheckFn = Callable[["Probe"], str]


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    title: str
    clause: str  # ISO/IEC 7816-4:2005 unless the text names another part or edition
    fn: CheckFn


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


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: Check
    outcome: Outcome
    reason: str
    seconds: float
    exchanges: tuple[Exchange, ...] = ()


REGISTRY: list[Check] = []


def check(id: str, clause: str, title: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check; the registry keeps definition order, which is the run order."""

    def register(fn: CheckFn) -> CheckFn:
        if any(c.id == id for c in REGISTRY):
            raise ValueError(f"duplicate conformance check {id!r}")
        REGISTRY.append(Check(id, title, clause, fn))
        return fn

    return register
