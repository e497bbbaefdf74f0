"""Start and stop a party's server process (`nettx <role> serve`) by PID, on a free port.

The server is told to listen on port 0 (or, on a restart, on the port it had) and prints the
port it bound on its first line of stdout: no window in which a port picked here could be
taken by someone else."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from host.errors import TransactionError
from terminal.cardproc import terminate

READY = re.compile(rb"listening on ([^\s:]+):(\d+)")


class PartyProcess:
    def __init__(self, role: str, args: list[str], log_path: Path, *,
                 host: str = "127.0.0.1", port: int = 0, timeout: float = 20.0,
                 launcher: list[str] | None = None) -> None:
        self.role, self.log_path, self.host = role, log_path, host
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_start = self._log.tell()  # a restart appends: read only what it writes
        # stdout goes to the log too: a pipe nobody reads would block the server once full
        self.proc = subprocess.Popen(
            [*(launcher or [sys.executable, "-m", "host.cli"]), "-v", role, "serve", *args,
             "--listen", f"{host}:{port}"],
            stdout=self._log, stderr=self._log, start_new_session=True,
        )
        try:
            self.port = self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                match = READY.search(log.read())
            if match:
                return int(match.group(2))
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise TransactionError("unreachable", f"the {self.role} server did not start "
                               f"(exit {self.proc.poll()}): {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 5.0) -> int:
        terminate(self.proc, timeout)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> PartyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
