"""One exception hierarchy for everything that talks to a card.

`NettxError` (defined in card_applet/errors.py, so the APDU codec's error stands under it too)
is the root for the whole project; host errors derive from it as well.
`ApduError` carries the status word; `apdu_error(sw)` picks the subclass that names its ISO
meaning, so callers catch `WrongPinError` rather than compare numbers.
"""

from __future__ import annotations

from card_applet.errors import NettxError
from card_applet.sw import SW, describe


class ReaderError(NettxError):
    """The transport failed: no reader, no card, connection lost."""


class NoCardError(ReaderError):
    pass


class CardRemovedError(ReaderError):
    pass


class ApduError(NettxError):
    def __init__(self, sw: int, command: str = "") -> None:
        self.sw = sw
        self.command = command
        where = f"{command}: " if command else ""
        super().__init__(f"{where}card answered {sw:04X} ({describe(sw)})")


class WrongPinError(ApduError):
    @property
    def tries_left(self) -> int:
        return self.sw & 0x0F


class AuthMethodBlockedError(ApduError):
    pass


class SecurityStatusError(ApduError):
    pass


class ConditionsNotSatisfiedError(ApduError):
    pass


class WrongDataError(ApduError):
    pass


class IntegrityError(ApduError):
    """An authentication tag or MAC did not verify on the card."""


class AuthenticationFailedError(ApduError):
    pass


class NotFoundError(ApduError):
    pass


class WrongLengthError(ApduError):
    pass


class EndlessResponseError(ApduError):
    """The card kept answering 61xx past the bound the terminal sets on one response
    (`sw` is its last 61xx): broken, or holding the terminal in a loop."""

    def __init__(self, sw: int, get_responses: int) -> None:
        super().__init__(sw, "GET RESPONSE")
        self.get_responses = get_responses  # GET RESPONSEs sent before giving up


_BY_SW: dict[int, type[ApduError]] = {
    SW.AUTH_METHOD_BLOCKED: AuthMethodBlockedError,
    SW.SECURITY_STATUS_NOT_SATISFIED: SecurityStatusError,
    SW.CONDITIONS_NOT_SATISFIED: ConditionsNotSatisfiedError,
    SW.WRONG_DATA: WrongDataError,
    SW.INCORRECT_SM_DATA: IntegrityError,
    SW.AUTHENTICATION_FAILED: AuthenticationFailedError,
    SW.FILE_NOT_FOUND: NotFoundError,
    SW.REFERENCED_DATA_NOT_FOUND: NotFoundError,
    SW.WRONG_LENGTH: WrongLengthError,
}


def apdu_error(sw: int, command: str = "") -> ApduError:
    if sw & 0xFFF0 == SW.VERIFY_FAILED:
        return WrongPinError(sw, command)
    return _BY_SW.get(sw, ApduError)(sw, command)


class CardAuthenticationError(NettxError):
    """The card in the reader did not prove it is the card this terminal expects, so
    nothing secret (PIN, PUK, part plaintext) was sent to it."""


class CardIdentityError(CardAuthenticationError):
    """The card's FCI names another holder or serial than the terminal expects."""


class CardNotPairedError(CardAuthenticationError):
    """This terminal holds no card authentication key for the card in the reader."""


class LineProtocolError(ReaderError):
    """The card broke ISO/IEC 7816-3 on a serial line: bad ATR, refused PPS, or a T=1
    block the protocol has no answer to."""


class ApduNotMappableError(ReaderError):
    """T=0: the APDU cannot travel as a TPDU (malformed, or extended: Nc > 255, Ne > 256).
    Refused before a byte is sent, so the card is untouched."""


class RetryLimitError(LineProtocolError):
    """T=1 gave up: a block still failed after the retry limit and resynchronisation. The
    command's outcome is unknown; it is never re-sent on its own (it may have executed)."""


class CardStalledError(LineProtocolError):
    """T=1: the card kept the command going past the reader's bounds (S(WTX) beyond the total
    waiting time, too many S(IFS) requests, a response chained past its maximum size). The
    command's outcome is unknown and the card is still in it: the next command resets it."""
