"""Start and stop a card process (card_applet.serve) by PID."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> CardProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SerialCardProcess(CardProcess):
    """A `python -m card_applet.serve --serial DEVICE` child: the card on a serial line."""

    def __init__(self, state: Path, device: str, *, extra: list[str] | None = None,
                 log_path: Path | None = None) -> None:
        self.device = device
        super().__init__(state, "", 0, extra=extra, log_path=log_path)

    def _where(self) -> list[str]:
        return ["--serial", self.device]
