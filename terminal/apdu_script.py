"""APDU scripts as pcsc-tools' scriptor and opensc-tool take them, for `nettx card apdu`.

A step is one command APDU in hex (spaces or colons between bytes allowed), `reset`, or
`exit`; `#` starts a comment. Beyond scriptor, a command may end in `= SW`: the status words
it must answer (`9000`, `63CX`, `9000,6A82`, `any`; X is any nibble). A command with no
expectation must answer 9000, so a failing script exits non-zero.

Parsing is pure; `exchange` is the one place that talks to a reader, and it follows the ISO
7816-4 conventions every PC/SC tool does: GET RESPONSE after 61xx, re-send with Le = xx
after 6Cxx.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from card_applet.apdu import CommandApdu, ResponseApdu
from terminal.errors import NettxError
from terminal.reader import Reader
from terminal.trace import trace_command, trace_response

INS_GET_RESPONSE = 0xC0
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
    """Why `raw` is none of ISO 7816-4's command cases, short or extended (the codec only
    says WRONG LENGTH)."""
    if len(raw) < 4:
        return f"{len(raw)} bytes: a command APDU starts with 4 (CLA INS P1 P2)"
    body = raw[4:]
    if body[0] != 0:
        lc = body[0]
        return (f"short Lc says {lc} data bytes, so the body after the header is {1 + lc} "
                f"bytes (or {2 + lc} with Le), not {len(body)}")
    if len(body) < 3:
        return ("a body starting 00 is extended length: 00 and two length bytes, "
                f"but only {len(body)} bytes follow the header")
    lc = int.from_bytes(body[1:3], "big")
    if lc == 0:
        return "extended Lc of 0000: an extended body with data needs Lc of 1..65535"
    return (f"extended Lc says {lc} data bytes, so the body after the header is {3 + lc} "
            f"bytes (or {5 + lc} with a 2-byte Le), not {len(body)}")


def parse_command(text: str) -> CommandApdu:
    raw = parse_hex(text)
    try:
        return CommandApdu.from_bytes(raw)
    except Exception as exc:  # the codec raises the card's own WRONG LENGTH error
        raise ScriptError(f"{text.strip()!r} is not a command APDU: "
                          f"{explain_malformed(raw)}") from exc


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


def _transmit(reader: Reader, cmd: CommandApdu) -> ResponseApdu:
    trace_command(reader.name, cmd)
    resp = ResponseApdu.from_bytes(reader.transmit(cmd.to_bytes()))
    trace_response(reader.name, resp)
    return resp


def exchange(reader: Reader, cmd: CommandApdu, *, follow: bool = True) -> ResponseApdu:
    """Send `cmd`; with `follow`, answer 6Cxx by re-sending with Le = xx and collect 61xx
    data with GET RESPONSE (on the command's logical channel), as opensc-tool does."""
    resp = _transmit(reader, cmd)
    if not follow:
        return resp
    if resp.sw1 == 0x6C:
        cmd = CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, resp.sw2 or 256)
        resp = _transmit(reader, cmd)
    data = bytearray(resp.data)
    for _ in range(MAX_GET_RESPONSE):
        if resp.sw1 != 0x61:
            return ResponseApdu(bytes(data), resp.sw)
        get = CommandApdu(cmd.cla & 0x03, INS_GET_RESPONSE, 0, 0, b"", resp.sw2 or 256)
        resp = _transmit(reader, get)
        data += resp.data
    raise ScriptError(f"the card answered 61xx to {MAX_GET_RESPONSE} GET RESPONSEs in a row")
