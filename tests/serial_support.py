"""Serial-line test support: socat pty pairs (stopped by PID), a card on a thread, and a
scripted card (an ATR and a PPS answer, nothing more) to test how the reader refuses cards."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import serial

from card_applet.applet import Applet
from card_applet.line import POWER_OFF_REQUEST, PPSS, RESET_REQUEST, Pps, serial_options
from card_applet.serial_card import SerialCard
from tests.conftest import unavailable


def need_socat() -> str:
    socat = shutil.which("socat")
    if socat is None:
        unavailable("socat not installed (make test installs it): pty pair tests need it")
    return socat


@contextlib.contextmanager
def socat_pair(directory: Path) -> Iterator[tuple[str, str]]:
    """`socat pty,raw,echo=0 pty,raw,echo=0`: two linked ptys (card end, reader end)."""
    socat = need_socat()
    card, reader = directory / "card-tty", directory / "reader-tty"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={card}", f"pty,raw,echo=0,link={reader}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (card.exists() and reader.exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"socat did not create the pty pair (exit {proc.poll()})")
            time.sleep(0.02)
        yield str(card), str(reader)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def card_thread(applet: Applet, device: str, **card_options: object) -> Iterator[SerialCard]:
    """A SerialCard serving `applet` on `device` in a thread; stopped and joined on exit."""
    port = serial.serial_for_url(device, timeout=0.01, **serial_options(device))
    card = SerialCard(applet, port, **card_options)  # type: ignore[arg-type]
    thread = threading.Thread(target=card.run, name="serial-card", daemon=True)
    thread.start()
    try:
        yield card
    finally:
        card.stop.set()
        thread.join(5)
        port.close()


@contextlib.contextmanager
def scripted_card(device: str, atr: bytes, pps_answer: bytes = b"") -> Iterator[list[str]]:
    """On `device`, a card that answers each reset request with `atr` and a PPS request with
    `pps_answer`; yields what it heard, in order ("reset", "pps", "power off")."""
    heard: list[str] = []
    stop = threading.Event()
    port = serial.serial_for_url(device, timeout=0.02, **serial_options(device))

    def run() -> None:
        buf = bytearray()
        while not stop.is_set():
            buf += port.read(64)
            while buf:
                if buf[:4] in (RESET_REQUEST, POWER_OFF_REQUEST):
                    reset = buf[:4] == RESET_REQUEST
                    heard.append("reset" if reset else "power off")
                    del buf[:4]
                    if reset:
                        port.write(atr)
                elif buf[0] == PPSS and len(buf) >= 2 and buf[1] not in (0x52, 0x4F):
                    size = Pps.length(buf) or 3
                    if len(buf) < size:
                        break
                    heard.append("pps")
                    del buf[:size]
                    port.write(pps_answer)
                elif buf[0] == PPSS and len(buf) < 4:
                    break  # the start of a request, or of a PPS
                else:
                    del buf[:1]

    thread = threading.Thread(target=run, name="scripted-card", daemon=True)
    thread.start()
    try:
        yield heard
    finally:
        stop.set()
        thread.join(5)
        port.close()
