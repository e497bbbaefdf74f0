"""Start and stop a card process (card_applet.serve) by PID."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from card_applet.sealing import StateKey


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


def child_log(log_path: Path | None) -> IO[bytes]:
    """Where a child's output goes: the log file, or an unnamed temporary file (stop()
    closes it)."""
    if log_path is not None:
        return open(log_path, "ab")
    return tempfile.TemporaryFile()


def key_pipe(key: StateKey) -> int:
    """A pipe holding the state key, its read end returned for a child to inherit: the key
    never appears in argv or the environment. (A key is at most 4 KiB: it fits the pipe.)"""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, key.material)
    finally:
        os.close(write_fd)
    return read_fd


class CardProcess:
    """A `python -m card_applet.serve` child connected to the vpcd at host:port, or (with
    `channel`) serving the connected socket it inherits: one end of a socketpair whose
    other end the caller keeps. `key`: the sealed state's key, handed over on a pipe."""

    def __init__(self, state: Path, host: str, port: int, *, extra: list[str] | None = None,
                 log_path: Path | None = None, channel: socket.socket | None = None,
                 key: StateKey | None = None) -> None:
        self.state, self.host, self.port = state, host, port
        self.channel = channel
        # without a log file the child's output goes to an unnamed temporary file (never a
        # pipe nobody reads), so a child that could not start can still say why
        self._log: IO[bytes] = child_log(log_path)
        inherit: list[int] = []
        key_args: list[str] = []
        if channel is not None:
            inherit.append(channel.fileno())
        if key is not None:
            key_fd = key_pipe(key)
            inherit.append(key_fd)
            key_args = ["--state-key-fd", str(key_fd)]
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "card_applet.serve", "--state", str(state),
                 *self._where(), *key_args, *(extra or [])],
                stdout=self._log, stderr=self._log, pass_fds=inherit,
            )
        finally:
            if key is not None:
                os.close(inherit[-1])

    def _where(self) -> list[str]:
        if self.channel is not None:
            return ["--vpcd-fd", str(self.channel.fileno())]
        return ["--vpcd", f"{self.host}:{self.port}"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def last_words(self) -> str:
        """The last line the child wrote (its one-line error), without an `error: ` prefix."""
        try:
            self._log.flush()
            with open(self._log.fileno(), "rb", closefd=False) as log:
                log.seek(0)
                lines = [ln.strip() for ln in log.read()[-4096:].decode(errors="replace")
                         .splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return lines[-1].removeprefix("error: ") if lines else ""

    def stop(self, timeout: float = 5.0) -> int:
        terminate(self.proc, timeout)
        if not self._log.closed:
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
        self.channel = None
        self._log = child_log(log_path)
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
