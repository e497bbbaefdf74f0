"""APDU scripts as pcsc-tools' scriptor and opensc-tool take them, for `nettx card apdu`.

A step is one command APDU in hex (spaces or colons between bytes allowed), `reset`, or
`exit`; `#` starts a comment. Beyond scriptor, a command may end in `= SW`: the status words
it must answer (`9000`, `63CX`, `9000,6A82`, `any`; X is any nibble). A command with no
expectation must answer 9000, so a failing script exits non-zero.

Parsing is pure; `exchange` is the one place that talks to a reader, and it follows the ISO
7816-4 conventions every PC/SC tool does, through the terminal's one follower
(terminal/protocol.py): GET RESPONSE on the command's logical channel after 61xx, re-send with
Le = xx after 6Cxx. Unlike a card session it never chains: a script's APDU goes as written.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from card_applet.apdu import ApduFormatError, CommandApdu, ResponseApdu
from terminal.errors import EndlessResponseError, NettxError
from terminal.protocol import ApduProtocol
from terminal.reader import Reader

# a card that keeps answering 61xx is bounded: 256 GET RESPONSEs carry 64 KiB, the most an
# extended Le asks for
MAX_GET_RESPONSE = 256


class ScriptError(NettxError):
    """A step that is not an APDU, with the reason and where it stands."""


class StepKind(enum.Enum):
    COMMAND = "command"
    RESET = "reset"
    EXIT = "exit"


@dataclass(frozen=True)
class Expectation:
    """Status words a step accepts: each pattern is four hex digits, X for any nibble."""

    patterns: tuple[str, ...] = ("9000",)

    @classmethod
    def parse(cls, text: str) -> Expectation:
        text = text.strip().upper()
        if text == "ANY":
            return cls(("XXXX",))
        patterns = tuple(p.strip() for p in text.split(","))
        for p in patterns:
            if not re.fullmatch(r"[0-9A-FX]{4}", p):
                raise ScriptError(f"expected status word {p!r}: give four hex digits "
                                  "(X for any nibble), e.g. 9000, 63CX, 9000,6A82 or any")
        return cls(patterns)

    def accepts(self, sw: int) -> bool:
        text = f"{sw:04X}"
        return any(all(p in ("X", t) for p, t in zip(pat, text, strict=True))
                   for pat in self.patterns)

    def __str__(self) -> str:
        return ",".join(self.patterns)


@dataclass(frozen=True)
class Step:
    kind: StepKind
    command: CommandApdu | None = None
    expect: Expectation = Expectation()
    where: str = ""


def parse_hex(text: str) -> bytes:
    """Hex bytes with optional spaces or colons between them; the reason when it is not."""
    compact = re.sub(r"[\s:]", "", text)
    bad = re.search(r"[^0-9A-Fa-f]", compact)
    if bad:
        raise ScriptError(f"{bad.group()!r} is not a hex digit")
    if len(compact) % 2:
        raise ScriptError(f"odd number of hex digits ({len(compact)}): a byte is two digits")
    return bytes.fromhex(compact)


def explain_malformed(raw: bytes) -> str:
    """Why `raw` is none of ISO 7816-4's command cases, short or extended (the card only
    says WRONG LENGTH)."""
    try:
        CommandApdu.from_bytes(raw)
    except ApduFormatError as exc:
        return str(exc)
    return "a well-formed command APDU"


def parse_command(text: str) -> CommandApdu:
    raw = parse_hex(text)
    try:
        return CommandApdu.from_bytes(raw)
    except ApduFormatError as exc:
        raise ScriptError(f"{text.strip()!r} is not a command APDU: {exc}") from exc


def parse_step(line: str, where: str = "") -> Step | None:
    """One script line (or one command-line argument); None for blanks and comments."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    lowered = text.lower()
    if lowered in ("reset", "exit", "quit"):
        kind = StepKind.RESET if lowered == "reset" else StepKind.EXIT
        return Step(kind, where=where)
    apdu_text, _, expect_text = text.partition("=")
    try:
        command = parse_command(apdu_text)
        expect = Expectation.parse(expect_text) if expect_text.strip() else Expectation()
    except ScriptError as exc:
        raise ScriptError(f"{where}{exc}" if where else str(exc)) from exc
    return Step(StepKind.COMMAND, command, expect, where)


def parse_script(text: str, name: str) -> list[Step]:
    steps = []
    for number, line in enumerate(text.splitlines(), 1):
        step = parse_step(line, where=f"{name}:{number}: ")
        if step is not None:
            steps.append(step)
    return steps


def exchange(reader: Reader, cmd: CommandApdu, *, follow: bool = True) -> ResponseApdu:
    """Send `cmd`; with `follow`, answer 6Cxx by re-sending with Le = xx and collect 61xx
    data with GET RESPONSE (on the command's logical channel), as opensc-tool does."""
    protocol = ApduProtocol(reader, chaining=False, max_get_responses=MAX_GET_RESPONSE)
    if not follow:
        return protocol.exchange(cmd)
    try:
        return protocol.send(cmd)
    except EndlessResponseError as exc:
        raise ScriptError(f"the card answered 61xx to {exc.get_responses} GET RESPONSEs in a "
                          "row") from exc
