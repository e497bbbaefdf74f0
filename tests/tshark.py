"""Wireshark's own decoder, from Debian's tshark package: a missing tshark skips the test, and
fails it under CI=true (make test installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import unavailable


def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        unavailable("tshark not installed (Debian package tshark; make test installs it)")
    return path


def fields(path: Path, *names: str) -> list[list[str]]:
    """One row per packet of the capture at `path`, the decoded `names` in order."""
    args = [tshark(), "-r", str(path), "-T", "fields"]
    for name in names:
        args += ["-e", name]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return [line.split("\t") for line in run.stdout.splitlines()]


def summary(path: Path, display_filter: str | None = None) -> list[str]:
    """tshark's one-line summary of each packet (matching `display_filter`)."""
    args = [tshark(), "-r", str(path)] + (["-Y", display_filter] if display_filter else [])
    run = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()
