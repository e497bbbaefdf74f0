"""PC/SC reader through pyscard (the only module that imports it)."""

from __future__ import annotations

import os
import time

from smartcard import scard

from terminal.errors import CardRemovedError, NoCardError, ReaderError

_PROTOCOLS = scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
_CARD_GONE = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_W_RESET_CARD,
              scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_UNPOWERED_CARD}
_SERVICE_GONE = {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED,
                 scard.SCARD_E_INVALID_HANDLE}


SYSTEM_SOCKET = "/run/pcscd/pcscd.comm"


def pcscd_socket() -> str:
    """The pcscd socket libpcsclite uses: PCSCLITE_CSOCK_NAME (a private pcscd, see
    vpcd_config/README.md) or the system's. The library reads it once per process."""
    return os.environ.get("PCSCLITE_CSOCK_NAME") or SYSTEM_SOCKET


def _establish_context() -> int:
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    _check(hresult, f"SCardEstablishContext (is a pcscd listening on {pcscd_socket()}?)")
    return context


def _check(hresult: int, what: str) -> None:
    if hresult == scard.SCARD_S_SUCCESS:
        return
    message = f"{what}: {scard.SCardGetErrorMessage(hresult)} (0x{hresult & 0xFFFFFFFF:08X})"
    if hresult in (scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_REMOVED_CARD):
        raise NoCardError(message)
    if hresult in _CARD_GONE:
        raise CardRemovedError(message)
    raise ReaderError(message)


def list_readers() -> list[str]:
    context = _establish_context()
    try:
        hresult, readers = scard.SCardListReaders(context, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        _check(hresult, "SCardListReaders")
        return list(readers)
    finally:
        scard.SCardReleaseContext(context)


class PcscReader:
    """A PC/SC reader chosen by name (exact, or a unique substring) or by index."""

    extended_length = True

    def __init__(self, which: str | int = 0) -> None:
        self._which = which
        self._context: int | None = None
        self._card: int | None = None
        self._protocol = 0
        self._atr = b""
        self.name = self._resolve()

    def _establish(self) -> int:
        if self._context is None:
            self._context = _establish_context()
        return self._context

    def _resolve(self) -> str:
        context = self._establish()
        hresult, readers = scard.SCardListReaders(context, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            readers = []
        else:
            _check(hresult, "SCardListReaders")
        if isinstance(self._which, int) or str(self._which).isdigit():
            index = int(self._which)
            if not 0 <= index < len(readers):
                raise ReaderError(f"no PC/SC reader #{index} (have {len(readers)})")
            return readers[index]
        matches = [r for r in readers if r == self._which] or [
            r for r in readers if str(self._which) in r]
        if len(matches) != 1:
            raise ReaderError(f"PC/SC reader {self._which!r} matches {len(matches)} of "
                              f"{readers}")
        return matches[0]

    def card_present(self) -> bool:
        """Whether pcscd currently sees a card in this reader (no connection needed)."""
        context = self._establish()
        hresult, states = scard.SCardGetStatusChange(
            context, 0, [(self.name, scard.SCARD_STATE_UNAWARE)])
        _check(hresult, "SCardGetStatusChange")
        return bool(states[0][1] & scard.SCARD_STATE_PRESENT)

    def power_on(self) -> bytes:
        self._disconnect(scard.SCARD_LEAVE_CARD)
        context = self._establish()
        hresult, card, protocol = scard.SCardConnect(context, self.name,
                                                     scard.SCARD_SHARE_SHARED, _PROTOCOLS)
        _check(hresult, f"SCardConnect {self.name}")
        self._card, self._protocol = card, protocol
        return self._read_atr()

    def _read_atr(self) -> bytes:
        assert self._card is not None
        hresult, _reader, _state, _protocol, atr = scard.SCardStatus(self._card)
        _check(hresult, "SCardStatus")
        self._atr = bytes(atr)
        return self._atr

    def reset(self) -> bytes:
        if self._card is None:
            return self.power_on()
        hresult, protocol = scard.SCardReconnect(self._card, scard.SCARD_SHARE_SHARED,
                                                 _PROTOCOLS, scard.SCARD_RESET_CARD)
        _check(hresult, "SCardReconnect")
        self._protocol = protocol
        return self._read_atr()

    def power_off(self) -> None:
        self._disconnect(scard.SCARD_UNPOWER_CARD)

    def _disconnect(self, disposition: int) -> None:
        if self._card is not None:
            scard.SCardDisconnect(self._card, disposition)
            self._card = None

    @property
    def atr(self) -> bytes:
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        if self._card is None:
            self.power_on()
        hresult, response = scard.SCardTransmit(self._card, self._protocol, list(apdu))
        if hresult in _SERVICE_GONE:  # pcscd restarted: a new context is needed
            self._card = None
            if self._context is not None:
                scard.SCardReleaseContext(self._context)
            self._context = None
        elif hresult in _CARD_GONE:
            self._card = None
        _check(hresult, "SCardTransmit")
        return bytes(response)

    def close(self) -> None:
        # LEAVE_CARD: unpowering would reset every other handle on this card (0x80100068)
        self._disconnect(scard.SCARD_LEAVE_CARD)
        if self._context is not None:
            scard.SCardReleaseContext(self._context)
            self._context = None


def wait_for_card(which: str | int = 0, timeout: float = 15.0) -> PcscReader:
    """A connected reader once a card in `which` answers a power-on. pcscd notices a new
    card only at its next poll (about 0.4 s), so a card process that just connected to
    vpcd is not usable at once."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            reader = PcscReader(which)
            reader.power_on()
            return reader
        except ReaderError as exc:
            last = exc
            time.sleep(0.1)
    raise NoCardError(f"no card appeared in PC/SC reader {which!r} within {timeout}s: {last}")


def wait_until_card_gone(which: str | int = 0, timeout: float = 10.0) -> None:
    """Until pcscd has noticed that the card left; before that, a new card process on the
    same reader would be mistaken for the old card (SCardTransmit: 0x80100016)."""
    reader = PcscReader(which)
    try:
        deadline = time.monotonic() + timeout
        while reader.card_present():
            if time.monotonic() > deadline:
                raise ReaderError(f"pcscd still sees a card in {which!r} after {timeout}s")
            time.sleep(0.05)
    finally:
        reader.close()
