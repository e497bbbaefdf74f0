"""What the bench scripts share: every process they start is stopped by PID, even when the
run is interrupted."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM / SIGHUP unwind like Ctrl-C, so every finally (and stop-by-PID) runs."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def close_quietly(stack: contextlib.ExitStack) -> None:
    """Cleanup must finish: a second Ctrl-C must not leave a process behind."""
    old = {s: signal.signal(s, signal.SIG_IGN)
           for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        stack.close()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@dataclass
class Run:
    """What a bench's body starts goes on `stack`; `interrupted` says whether it finished."""

    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    interrupted: bool = False


@contextlib.contextmanager
def stopping_everything(say: Callable[[str], object]) -> Iterator[Run]:
    """Run a bench's body: whatever it put on the run's stack is stopped at the end, also on
    Ctrl-C, SIGTERM or SIGHUP, which end the body and set `interrupted` (exit status 130)."""
    run = Run()
    with signals_raise():
        try:
            yield run
        except KeyboardInterrupt:
            say("[red]interrupted: stopping everything started")
            run.interrupted = True
        finally:
            close_quietly(run.stack)


def filesystem(path: Path) -> str:
    """The type of the filesystem under `path` (fsync costs depend on it), or "?"."""
    try:
        return subprocess.run(["df", "--output=fstype", str(path)], capture_output=True,
                              text=True, timeout=5).stdout.split()[-1]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def load_average() -> str:
    loadavg = Path("/proc/loadavg")
    return " ".join(loadavg.read_text().split()[:3]) if loadavg.exists() else "?"


def work_dir(stack: contextlib.ExitStack, keep: bool, prefix: str,
             say: Callable[[str], object]) -> Path:
    """A fresh directory for the run's files: removed with `stack`, unless `keep`."""
    if keep:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        say(f"keeping {path}")
        return path
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
