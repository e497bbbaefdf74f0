"""The one way checks talk to the card: raw APDUs through a Reader, each exchange recorded.

No chaining, no automatic GET RESPONSE, no Le correction: the checks test exactly those,
so they must see the card's own answers. `fetch_all` is the one helper that follows 61xx,
for checks that only need a whole response to compare against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from card_applet.apdu import CommandApdu, ResponseApdu
from card_applet.sw import describe
from card_applet.vocabulary import Ins
from terminal.conformance.capabilities import Capabilities, from_atr
from terminal.conformance.record import Deviation, Exchange, Failed, NotApplicable
from terminal.errors import CardRemovedError
from terminal.reader import Reader
from terminal.trace import trace_command, trace_response

SELECT, GET_RESPONSE, VERIFY = Ins.SELECT, Ins.GET_RESPONSE, Ins.VERIFY  # ISO/IEC 7816-4
MAX_GET_RESPONSE = 512  # GET RESPONSEs one check may send before calling the card broken


class PinFormat:
    """How VERIFY carries a PIN: the card's choice, so an option."""

    ASCII_FF = "ascii-ff"  # ASCII digits right-padded with FF to 8 bytes (PIV, nettx)
    ASCII = "ascii"  # the ASCII digits alone
    FORMAT2 = "format2"  # ISO 9564-1 format 2: 2N, BCD digits, F padding, 8 bytes
    ALL = (ASCII_FF, ASCII, FORMAT2)


def pin_block(pin: str, fmt: str) -> bytes:
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise ValueError("a PIN is 4..12 digits")
    if fmt == PinFormat.ASCII_FF:
        if len(pin) > 8:
            raise ValueError("an FF-padded PIN block holds at most 8 digits")
        return pin.encode().ljust(8, b"\xff")
    if fmt == PinFormat.ASCII:
        return pin.encode()
    if fmt == PinFormat.FORMAT2:
        nibbles = pin + "F" * (14 - len(pin))
        return bytes((0x20 | len(pin),)) + bytes.fromhex(nibbles)
    raise ValueError(f"unknown PIN format {fmt!r}")


def other_pin(pin: str) -> str:
    """A PIN of the same length that is certainly wrong."""
    return "".join(str((int(d) + 1) % 10) for d in pin)


@dataclass(frozen=True, slots=True)
class Target:
    """Card-specific facts; checks that need one that is missing are not applicable."""

    aid: bytes | None = None
    pin: str | None = None
    puk: str | None = None
    pin_reference: int | None = None
    pin_format: str = PinFormat.ASCII_FF
    protected: bytes | None = None  # a command APDU that needs the PIN verified
    auth_key_reference: int | None = None  # INTERNAL AUTHENTICATE P2 of a key usable w/o PIN
    # transparent EFs under the MF the file checks read, the first that selects:
    # EF.ATR/INFO and EF.DIR (7816-4 8.2.1.1) are where a card with a file system has them
    files: tuple[int, ...] = (0x2F01, 0x2F00)


@dataclass
class Probe:
    reader: Reader
    target: Target
    caps: Capabilities = field(default_factory=Capabilities)
    log: list[Exchange] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    check_id: str = ""  # the check running (the runner sets it), named in later reasons
    _app_found: bool | None = None
    _absence_failed_in: str | None = None  # the check that failed on a missing application

    def start(self) -> None:
        """A clean card for the next check: warm reset, the log emptied."""
        self.log, self.deviations = [], []
        self.reset_card()

    def reset_card(self) -> None:
        """A warm reset inside a check: the log keeps what came before."""
        self.caps = from_atr(self.reader.reset())

    # -- raw exchanges ----------------------------------------------------------------------

    def raw(self, apdu: bytes) -> ResponseApdu:
        try:
            response = self.reader.transmit(apdu)
        except BaseException:
            self.log.append(Exchange.record(apdu, None))
            raise
        self.log.append(Exchange.record(apdu, response))
        if not response:  # no card answers nothing: it died mid-command (vicc's crashes)
            raise CardRemovedError(f"{self.reader.name}: empty response, the card is gone")
        try:
            return ResponseApdu.from_bytes(response)
        except ValueError as exc:
            raise Failed(f"response {response.hex().upper()} has no status word") from exc

    def send(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
             le: int | None = None, *, extended: bool = False) -> ResponseApdu:
        cmd = CommandApdu(cla, ins, p1, p2, data, le, extended)
        trace_command(self.reader.name, cmd)
        resp = self.raw(cmd.to_bytes())
        trace_response(self.reader.name, resp)
        return resp

    def fetch_all(self, resp: ResponseApdu, cla: int = 0x00) -> ResponseApdu:
        """Follow 61xx with GET RESPONSE (Le = xx) until another status word."""
        data = bytearray(resp.data)
        for _ in range(MAX_GET_RESPONSE):
            if resp.sw1 != 0x61:
                return ResponseApdu(bytes(data), resp.sw)
            le = resp.sw2 or 256
            resp = self.send(cla, GET_RESPONSE, 0, 0, le=le)
            at_most(resp, le, f"GET RESPONSE with Le = {le % 256:02X}")
            data += resp.data
        raise Failed(f"still 61xx after {MAX_GET_RESPONSE} GET RESPONSEs")

    # -- what most checks need first --------------------------------------------------------

    def need_extended(self) -> None:
        if not self.reader.extended_length:
            raise NotApplicable(f"reader {self.reader.name} carries short APDUs only")
        if not self.caps.extended_length:
            raise NotApplicable("the ATR does not advertise extended Lc/Le "
                                "(card capabilities, 8.1.1.2.7)")

    def select_application(self, p2: int = 0x0C, *, required: bool = True) -> ResponseApdu:
        """SELECT the target application by its full AID (case 3, no FCI by default).

        Not applicable without an AID. An AID given (or defaulted) that the card does not
        have is a failure, reported once: the first check that needs the application fails,
        the later ones are not applicable and name it. Otherwise a suite pointed at the
        wrong card, or with a mistyped --aid, would pass with nothing tested. A check that
        only wants the application current if there is one passes `required=False`.
        """
        aid = self.target.aid
        if aid is None:
            raise NotApplicable("no application AID given (--aid)")
        name = aid.hex().upper()
        if self._absence_failed_in is not None:
            raise NotApplicable(f"the card has no application {name} "
                                f"(failed in {self._absence_failed_in})")
        if self._app_found is False and not required:
            raise NotApplicable(f"the card has no application {name}")
        le = None if p2 & 0x0C == 0x0C else 256
        resp = self.fetch_all(self.send(0x00, SELECT, 0x04, p2, aid, le))
        if resp.sw in (0x6A82, 0x6A81):
            self._app_found = False
            absent = f"the card has no application {name}: SELECT answered {sw_text(resp.sw)}"
            if not required:
                raise NotApplicable(absent)
            self._absence_failed_in = self.check_id or "an earlier check"
            raise Failed(f"{absent} (is --aid right?)")
        expect(resp, 0x9000, f"SELECT {name}")
        self._app_found = True
        return resp

    def need_reference(self) -> int:
        if self.target.pin_reference is None:
            raise NotApplicable("no PIN reference given (--pin-ref)")
        return self.target.pin_reference

    def need_pin(self) -> tuple[str, int]:
        ref = self.need_reference()
        if self.target.pin is None:
            raise NotApplicable("no PIN given (NETTX_PIN, --pin-file, --pin-fd, --ask-pin): "
                                "a wrong try could not be undone")
        return self.target.pin, ref

    def verify(self, pin: str | None) -> ResponseApdu:
        """VERIFY with a PIN, or the status query (no data) when pin is None."""
        ref = self.need_reference()
        data = b"" if pin is None else pin_block(pin, self.target.pin_format)
        return self.send(0x00, VERIFY, 0x00, ref, data)


def sw_text(sw: int) -> str:
    return f"{sw:04X} ({describe(sw)})"


def expect(resp: ResponseApdu, sw: int | tuple[int, ...], what: str) -> None:
    wanted = sw if isinstance(sw, tuple) else (sw,)
    if resp.sw not in wanted:
        names = " or ".join(f"{w:04X}" for w in wanted)
        raise Failed(f"{what}: expected {names}, card answered {sw_text(resp.sw)}",
                     resp.sw, wanted)


def executed(resp: ResponseApdu) -> bool:
    """Whether the card carried the command out: data, 9000, or a warning (61xx, 62xx,
    63xx: processing completed, 5.1.3). 64xx to 6Fxx are refusals."""
    return bool(resp.data) or not 0x64 <= resp.sw1 <= 0x6F


def refused(p: Probe, resp: ResponseApdu, preferred: int | tuple[int, ...], what: str) -> None:
    """A command the card must refuse: executing it fails the check; a refusal with another
    status word than `preferred` is a deviation, recorded, and the check goes on."""
    wanted = preferred if isinstance(preferred, tuple) else (preferred,)
    if resp.sw in wanted and not resp.data:
        return
    names = " or ".join(f"{w:04X}" for w in wanted)
    if executed(resp):
        got = f"{len(resp.data)} bytes and " if resp.data else ""
        raise Failed(f"{what}: executed ({got}{sw_text(resp.sw)}), must be refused "
                     f"({names})", resp.sw, wanted)
    p.deviations.append(Deviation(what, resp.sw, wanted))


def at_most(resp: ResponseApdu, ne: int, what: str) -> None:
    """Ne is the most the card may return (5.1), whatever the status word: a card that
    ignores Le overruns the buffer a terminal sized by it."""
    if len(resp.data) > ne:
        raise Failed(f"{what}: {len(resp.data)} data bytes, more than Ne = {ne} "
                     "(Ne is a maximum, 5.1)")
