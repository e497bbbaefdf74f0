"""The one reader interface every transport implements."""

from __future__ import annotations

from typing import Protocol


class Reader(Protocol):
    name: str
    #: whether the reader carries extended-length APDUs (else the protocol chains)
    extended_length: bool

    def power_on(self) -> bytes:
        """Power the card (cold reset) and return its ATR."""

    def power_off(self) -> None: ...

    def reset(self) -> bytes:
        """Warm reset; returns the ATR."""

    @property
    def atr(self) -> bytes: ...

    def transmit(self, apdu: bytes) -> bytes:
        """One command APDU out, one response APDU (data + SW1 SW2) back."""

    def close(self) -> None: ...


def check_command(apdu: bytes) -> None:
    """Fewer bytes than a header (CLA INS P1 P2) are no command APDU at all: a reader that
    frames APDUs itself refuses them before they reach the line (ValueError)."""
    if len(apdu) < 4:
        raise ValueError("a command APDU has at least 4 bytes")
