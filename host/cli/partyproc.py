"""Start and stop a party's server process (`nettx <role> serve`) by PID, on a free port.

The server is told to listen on port 0 (or, on a restart, on the port it had) and prints the
port it bound on its first line of stdout: no window in which a port picked here could be
taken by someone else.

A secret the server needs (the PIN of its card) goes in `secrets`, which become its
environment (NETTX_PIN), never its argv: every local user reads /proc/PID/cmdline. The child
runs with umask 077, so its database, -wal, -shm and log are its owner's alone. `env` adds
settings that are not secrets (NETTX_LOOP, the event loop: host.parties.server)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from host.cli.kit import PRIVATE_UMASK
from host.cli.secretenv import SECRET_ENVS
from host.errors import TransactionError
from terminal.cardproc import terminate

READY = re.compile(rb"listening on ([^\s:]+):(\d+)")


class PartyProcess:
    def __init__(self, role: str, args: list[str], log_path: Path, *,
                 host: str = "127.0.0.1", port: int = 0, timeout: float = 20.0,
                 launcher: list[str] | None = None,
                 secrets: dict[str, str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.role, self.log_path, self.host = role, log_path, host
        unknown = set(secrets or {}) - set(SECRET_ENVS)
        if unknown:
            raise ValueError(f"not a secret's environment variable: {sorted(unknown)}")
        if set(env or {}) & set(SECRET_ENVS):
            raise ValueError("a secret goes in `secrets`, not `env`")
        self._log = open(  # noqa: SIM115 - closed in stop()
            os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
        self._log_start = self._log.tell()  # a restart appends: read only what it writes
        # only the secrets asked for: none inherited from whoever started this process
        inherited = {k: v for k, v in os.environ.items() if k not in SECRET_ENVS}
        # stdout goes to the log too: a pipe nobody reads would block the server once full
        self.proc = subprocess.Popen(
            [*(launcher or [sys.executable, "-m", "host.cli"]), "-v", role, "serve", *args,
             "--listen", f"{host}:{port}"],
            stdout=self._log, stderr=self._log, start_new_session=True,
            env={**inherited, **(env or {}), **(secrets or {})}, umask=PRIVATE_UMASK,
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
