"""Host-side errors: all under the project's one root, terminal.errors.NettxError."""

from __future__ import annotations

from terminal.errors import NettxError


class AuthorityError(NettxError):
    """The centre refused: not initialised, duplicate identifier, colliding x, bad file."""


class PersonalisationError(NettxError):
    """The card is not blank, or not one of this centre's (wrong card cryptogram)."""


class PolicyError(NettxError):
    """An order form or partition policy that would leak a field to the wrong party."""


class OrderError(NettxError):
    """An order the holder's terminal refuses to build (unknown item, bad field)."""


class TransactionError(NettxError):
    """A transaction step was refused; `code` is the machine-readable reason on the wire.

    The same codes travel in `error` messages and in declines, so a party reports exactly
    what the peer told it."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")
        self.reason = message


class WireError(TransactionError):
    """A frame or message that does not parse: the connection is closed after saying so."""

    def __init__(self, message: str, code: str = "malformed") -> None:
        super().__init__(code, message)


class EnvelopeError(TransactionError):
    """An envelope or part that is malformed, forged, replayed or not this party's."""
