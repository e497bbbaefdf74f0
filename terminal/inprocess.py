"""In-process reader: the applet object, called directly."""

from __future__ import annotations

from card_applet.applet import Applet
from card_applet.atr import ATR


class InProcessReader:
    extended_length = True

    def __init__(self, applet: Applet, name: str = "in-process") -> None:
        self.applet = applet
        self.name = name
        self._powered = False

    def power_on(self) -> bytes:
        self.applet.power_on()
        self._powered = True
        return ATR

    def power_off(self) -> None:
        self.applet.power_off()
        self._powered = False

    def reset(self) -> bytes:
        self.applet.reset()
        return ATR

    @property
    def atr(self) -> bytes:
        return ATR

    def transmit(self, apdu: bytes) -> bytes:
        if not self._powered:
            self.power_on()
        return self.applet.process(apdu)

    def close(self) -> None:
        """Power off and let go of the card's state file (its lock), as a card process
        does when it ends: the same file can be opened again in this process."""
        self.power_off()
        release = getattr(self.applet.store, "close", None)
        if release is not None:
            release()
