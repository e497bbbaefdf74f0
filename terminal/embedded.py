"""The embedded reader: speaks vpcd to a card process directly; no pcscd needed.

Two ways to reach the card: listen on HOST:PORT the way vpcd does (`nettx card serve --vpcd
HOST:PORT` connects to it; whoever connects first is the card), or `EmbeddedReader.over(sock)`
an already connected socket, e.g. one end of a socketpair whose other end was handed to the
card process this terminal started. The second has no listening socket at all, so no other
process can take the channel: `host.cli.cardaccess.open_card` uses it."""

from __future__ import annotations

import socket
import time

from card_applet.vpcd import FrameBuffer, VpcdControl, encode_frame, set_quickack, tune
from terminal.errors import CardRemovedError, NoCardError, ReaderError
from terminal.reader import check_command


class EmbeddedReader:
    extended_length = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 card_timeout: float = 10.0, response_timeout: float = 60.0,
                 channel: socket.socket | None = None, name: str | None = None) -> None:
        self._listener: socket.socket | None = None
        if channel is None:
            self._listener = socket.create_server((host, port))
            port = self._listener.getsockname()[1]
        self.host, self.port = host, port
        self.name = name or f"embedded vpcd {host}:{port}"
        self.card_timeout = card_timeout
        self.response_timeout = response_timeout
        self._sock: socket.socket | None = None
        self._frames = FrameBuffer()
        self._atr = b""
        if channel is not None:
            tune(channel)
            self._sock = channel

    @classmethod
    def over(cls, channel: socket.socket, name: str = "embedded vpcd (private channel)", *,
             response_timeout: float = 60.0) -> EmbeddedReader:
        """A reader on an already connected vpcd socket: nothing listens; when the channel
        is lost the card is gone for good (no one else may take its place)."""
        return cls(channel=channel, name=name, response_timeout=response_timeout)

    # -- connection -------------------------------------------------------------------------

    def wait_for_card(self, timeout: float | None = None) -> None:
        if self._sock is not None:
            return
        if self._listener is None:
            raise CardRemovedError(f"card left {self.name}")
        self._listener.settimeout(self.card_timeout if timeout is None else timeout)
        try:
            sock, _ = self._listener.accept()
        except TimeoutError as exc:
            raise NoCardError(f"no card connected to {self.name}") from exc
        tune(sock)
        self._sock, self._frames = sock, FrameBuffer()

    @property
    def card_present(self) -> bool:
        return self._sock is not None

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def _send(self, payload: bytes) -> None:
        self.wait_for_card()
        assert self._sock is not None
        try:
            self._sock.sendall(encode_frame(payload))
        except OSError as exc:
            self._drop()
            raise CardRemovedError(f"card left {self.name}: {exc}") from exc

    def _receive(self) -> bytes:
        assert self._sock is not None
        deadline = time.monotonic() + self.response_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._drop()
                raise ReaderError(f"card on {self.name} did not answer in time")
            self._sock.settimeout(remaining)
            set_quickack(self._sock)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                self._drop()
                raise CardRemovedError(f"card left {self.name}: {exc}") from exc
            if not data:
                self._drop()
                raise CardRemovedError(f"card left {self.name}")
            frames = self._frames.feed(data)
            if frames:
                return frames[0]

    # -- Reader -----------------------------------------------------------------------------

    def power_on(self) -> bytes:
        self._send(bytes((VpcdControl.POWER_ON,)))
        return self._read_atr()

    def power_off(self) -> None:
        if self._sock is not None:
            self._send(bytes((VpcdControl.POWER_OFF,)))

    def reset(self) -> bytes:
        self._send(bytes((VpcdControl.RESET,)))
        return self._read_atr()

    def _read_atr(self) -> bytes:
        self._send(bytes((VpcdControl.GET_ATR,)))
        self._atr = self._receive()
        return self._atr

    @property
    def atr(self) -> bytes:
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        check_command(apdu)
        if self._sock is None:
            self.power_on()
        self._send(apdu)
        return self._receive()

    def close(self) -> None:
        self._drop()
        if self._listener is not None:
            self._listener.close()
