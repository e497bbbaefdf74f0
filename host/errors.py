"""Host-side errors: all under the project's one root, terminal.errors.NettxError.

A transaction error carries an `ErrorCode`, the machine-readable reason that travels in an
`error` message (docs/protocol.md, "Wire", the error table). Who said it is in the class, as
h11 splits its protocol errors: `Refused` is this party refusing (a handler, the frame
decoder, the envelope checks), `PeerRefused` is an `error` message a peer sent us, and
`ConnectionFailed` is the network between us failing. Code that only cares about the reason
catches `TransactionError` and compares `code` with the enum's members."""

from __future__ import annotations

import enum

from terminal.errors import NettxError


class AuthorityError(NettxError):
    """The centre refused: not initialised, duplicate identifier, colliding x, bad file."""


class PersonalisationError(NettxError):
    """The card is not blank, or not one of this centre's (wrong card cryptogram)."""


class PolicyError(NettxError):
    """An order form or partition policy that would leak a field to the wrong party."""


class OrderError(NettxError):
    """An order the holder's terminal refuses to build (unknown item, bad field)."""


class ErrorCode(enum.StrEnum):
    """Every code an `error` message carries (docs/protocol.md, "Wire")."""

    # the frame or message
    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown-type"
    UNEXPECTED = "unexpected"
    TOO_LARGE = "too-large"
    TRUNCATED = "truncated"
    TIMEOUT = "timeout"
    # the envelope and the order
    VERSION = "version"
    WRONG_PARTY = "wrong-party"
    WRONG_FORM = "wrong-form"
    WRONG_ORDER = "wrong-order"
    STALE = "stale"
    FORGED = "forged"
    COMMITMENT = "commitment"
    POLICY = "policy"
    AMOUNT = "amount"
    UNKNOWN_ITEM = "unknown-item"
    REPLAY = "replay"
    UNCONFIRMED = "unconfirmed"
    UNKNOWN_ORDER = "unknown-order"
    # a session between two parties (docs/protocol.md, "Sessions")
    NO_SESSION = "no-session"
    UNAUTHENTICATED = "unauthenticated"
    BAD_MAC = "bad-mac"
    SEQUENCE = "sequence"
    # the key module
    NO_KEY = "no-key"
    BAD_PEER = "bad-peer"
    BAD_CHALLENGE = "bad-challenge"
    KEY_MODULE = "key-module"
    # reaching the peer
    UNREACHABLE = "unreachable"
    CONNECTION_LOST = "connection-lost"
    BUSY = "busy"
    INTERNAL = "internal"
    #: a code a (newer) peer sent that this version does not know; the text is kept
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, text: str) -> ErrorCode:
        """A peer's code: a member, or UNKNOWN rather than a KeyError (as fido2's CtapError)."""
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN


class TransactionError(NettxError):
    """A transaction step failed; `code` is the machine-readable reason on the wire.

    The same codes travel in `error` messages and in declines, so a party reports exactly
    what the peer told it: `said` is the code as it travels (a peer's unknown code verbatim)."""

    def __init__(self, code: ErrorCode, message: str, *, said: str | None = None) -> None:
        self.code = ErrorCode(code)
        self.said = self.code.value if said is None else said
        super().__init__(f"{self.said}: {message}")
        self.reason = message


class Refused(TransactionError):
    """This party refuses: the peer gets an `error` message with the code."""


class PeerRefused(TransactionError):
    """The peer sent an `error` message. Not authenticated: anyone on the path can send one."""

    def __init__(self, said: str, message: str) -> None:
        super().__init__(ErrorCode.parse(said), message, said=said)


class ConnectionFailed(TransactionError):
    """The peer could not be reached, or the connection to it broke."""


class WireError(Refused):
    """A frame or message that does not parse: the connection is closed after saying so."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.MALFORMED) -> None:
        super().__init__(code, message)


class EnvelopeError(Refused):
    """An envelope or part that is malformed, forged, replayed or not this party's."""
