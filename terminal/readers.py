"""Reader specifications, as the CLI's --reader takes them.

    inprocess:FILE          the applet in this process, over its EEPROM file
    embedded[:HOST]:PORT    listen as vpcd does; a card process connects to it
    pcsc[:NAME|INDEX]       a PC/SC reader through pcscd (default: index 0)
    serial:DEVICE           a T=1 reader on a serial line: a UART or a pty (/dev/pts/N);
                            serial:///dev/ttyUSB0 works too, and so does
                            serial:socket://HOST:PORT (any pyserial URL)
    serial:t0:DEVICE        the same, speaking T=0 (serial:t1:DEVICE names T=1)
    socket://HOST:PORT      pyserial URLs (socket://, rfc2217://) name a serial line directly
"""

from __future__ import annotations

from pathlib import Path

from card_applet.applet import Applet
from card_applet.sealing import StateKey
from card_applet.state import FileStore
from terminal.embedded import EmbeddedReader
from terminal.errors import ReaderError
from terminal.inprocess import InProcessReader
from terminal.reader import Reader

KINDS = ("inprocess", "embedded", "pcsc", "serial")
SERIAL_URL_SCHEMES = ("socket", "rfc2217")


def open_reader(spec: str, state_key: StateKey | None = None) -> Reader:
    """`state_key`: the key of a sealed state, for inprocess:FILE."""
    kind, _, arg = spec.partition(":")
    if kind == "inprocess":
        if not arg:
            raise ReaderError("inprocess reader needs the card's state file: inprocess:FILE")
        path = Path(arg)
        if not path.exists():
            raise ReaderError(f"no card state at {path}")
        store = FileStore(path, state_key)
        try:
            applet = Applet(store)
        except BaseException:
            store.close()  # a state that cannot be loaded must not stay locked
            raise
        return InProcessReader(applet, name=f"in-process {path.name}")
    if kind == "embedded":
        host, _, port = arg.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ReaderError(f"embedded reader needs a port 1..65535: embedded:[HOST:]PORT, "
                              f"got {spec!r}")
        return EmbeddedReader(host or "127.0.0.1", int(port))
    if kind == "pcsc":
        from terminal.pcsc import PcscReader  # pyscard only when PC/SC is asked for

        return PcscReader(arg or 0)
    if kind == "serial" or (kind in SERIAL_URL_SCHEMES and arg.startswith("//")):
        from terminal.serial import SerialReader  # pyserial only when a line is asked for

        device = spec if kind != "serial" else arg
        protocol = 1
        if kind == "serial" and device[:3] in ("t0:", "t1:"):
            protocol, device = int(device[1]), device[3:]
        if device.startswith("//"):  # serial:///dev/ttyUSB0
            device = device[2:]
        if not device:
            raise ReaderError("serial reader needs a device: serial:[t0:|t1:]DEVICE or a "
                              "pyserial URL")
        return SerialReader(device, protocol=protocol)
    raise ReaderError(f"unknown reader {spec!r}: use one of {', '.join(KINDS)}")
