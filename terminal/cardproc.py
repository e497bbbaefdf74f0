"""Start and stop a card process (card_applet.serve) by PID."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after `timeout`: a child never outlives its owner."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class CardProcess:
    """A `python -m card_applet.serve` child connected to the vpcd at host:port."""

    def __init__(self, state: Path, host: str, port: int, *, extra: list[str] | None = None,
                 log_path: Path | None = None) -> None:
        self.state, self.host, self.port = state, host, port
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "card_applet.serve", "--state", str(state),
             *self._where(), *(extra or [])],
            stdout=self._log, stderr=self._log,
        )

    def _where(self) -> list[str]:
        return ["--vpcd", f"{self.host}:{self.port}"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        terminate(self.proc, timeout)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> CardProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


VICC = Path("/usr/bin/vicc")
# Debian's vsmartcard-vpicc installs its module off the default path (DESIGN.md facts)
VICC_PYTHONPATH = Path("/usr/lib/python3/site-packages/virtualsmartcard")


def vicc_missing() -> str | None:
    """Why Debian's vicc cannot run here, or None."""
    if not VICC.exists():
        return "vicc not installed (Debian package vsmartcard-vpicc)"
    if not VICC_PYTHONPATH.is_dir():
        return f"vicc's module not found in {VICC_PYTHONPATH}"
    return None


def vicc_argv(host: str, port: int) -> list[str]:
    """vicc's ISO 7816 card, connecting to the vpcd at host:port; run it with this Python
    (it needs pycryptodome) and PYTHONPATH=VICC_PYTHONPATH."""
    return [sys.executable, str(VICC), "-t", "iso7816", "-H", host, "-P", str(port)]


class ViccProcess(CardProcess):
    """Debian's vicc (a card that is not ours) connected to the vpcd at host:port."""

    def __init__(self, host: str, port: int, *, log_path: Path | None = None) -> None:
        self.state, self.host, self.port = VICC, host, port
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=str(VICC_PYTHONPATH))
        self.proc = subprocess.Popen(vicc_argv(host, port), stdout=self._log,
                                     stderr=self._log, env=env)


class SerialCardProcess(CardProcess):
    """A `python -m card_applet.serve --serial DEVICE` child: the card on a serial line."""

    def __init__(self, state: Path, device: str, *, extra: list[str] | None = None,
                 log_path: Path | None = None) -> None:
        self.device = device
        super().__init__(state, "", 0, extra=extra, log_path=log_path)

    def _where(self) -> list[str]:
        return ["--serial", self.device]
