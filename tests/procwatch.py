"""Run a command and read what another local user reads while it runs: the command lines
(/proc/PID/cmdline, world-readable: `ps`) of its process and of every process it starts, and
the environments of those children (same user only, but no child needs the secrets)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Watched:
    returncode: int
    stdout: str
    stderr: str
    cmdlines: dict[int, bytes] = field(default_factory=dict)  # the process and descendants
    child_environs: dict[int, bytes] = field(default_factory=dict)  # descendants only

    def assert_secrets_hidden(self, *secrets: str) -> None:
        assert self.cmdlines, "no command line was read"
        for secret in secrets:
            for pid, cmdline in self.cmdlines.items():
                assert secret.encode() not in cmdline, (pid, cmdline)
            for pid, environ in self.child_environs.items():
                assert secret.encode() not in environ, (pid, self.cmdlines.get(pid))


def _ppids() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        parents[int(entry.name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    return parents


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _tree(root: int) -> list[int]:
    parents = _ppids()
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree += frontier
    return tree


def run_watched(argv: Sequence[str], *, env: dict[str, str], pass_fds: Sequence[int] = (),
                stdin: int | None = subprocess.DEVNULL, timeout: float = 120,
                interval: float = 0.01) -> Watched:
    """Run ARGV, sampling its process tree every INTERVAL seconds until it exits."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), cwd=REPO, env=env, stdin=stdin, stdout=out,
                                stderr=err, pass_fds=tuple(pass_fds))
        for fd in pass_fds:
            os.close(fd)  # the child holds its copy: EOF reaches it once it has read
        cmdlines: dict[int, bytes] = {}
        environs: dict[int, bytes] = {}
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{argv} still running after {timeout} s")
                root = _read(f"/proc/{proc.pid}/cmdline")
                for pid in _tree(proc.pid):
                    cmdline = _read(f"/proc/{pid}/cmdline")
                    if cmdline:  # empty for a zombie
                        cmdlines[pid] = cmdline
                    if pid == proc.pid or cmdline == root:
                        # the command, or a fork of it before its exec: the same memory, so
                        # the environment block it started with (its own user's to read)
                        continue
                    environ = _read(f"/proc/{pid}/environ")
                    if environ and _read(f"/proc/{pid}/cmdline") == cmdline:  # no exec between
                        environs[pid] = environ
                time.sleep(interval)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        out.seek(0)
        err.seek(0)
        return Watched(proc.returncode, out.read().decode(errors="replace"),
                       err.read().decode(errors="replace"), cmdlines, environs)
