"""pcsc-tools names the card: `nettx card atr-list --install` puts its ATRs in the per-user
list that ATR_analysis (what pcsc_scan runs for each card) reads first."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from card_applet.atr import ATR, ATR_CRC
from terminal import smartcard_list
from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]


def nettx(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A scratch HOME, and wget / curl that fail: ATR_analysis downloads a fresh list when it
    does not know an ATR, and a test must never reach out."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("wget", "curl"):
        (stubs / tool).write_text("#!/bin/sh\nexit 1\n")
        (stubs / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{stubs}:{env['PATH']}")
    return env


def test_the_entry_carries_both_atrs_in_the_list_format() -> None:
    lines = smartcard_list.entry().split("\n")
    assert lines[0] == ATR.hex(" ").upper() and lines[1].startswith("\tnettx virtual smart card")
    assert lines[3] == ATR_CRC.hex(" ").upper() and lines[2] == lines[5] == ""


def test_user_list_path_follows_atr_analysis() -> None:
    assert smartcard_list.user_list_path({"HOME": "/h"}) == Path("/h/.cache/smartcard_list.txt")
    assert smartcard_list.user_list_path({"HOME": "/h", "XDG_CACHE_HOME": "/c"}) == \
        Path("/c/smartcard_list.txt")


def test_install_starts_from_the_system_list_and_is_idempotent(tmp_path: Path) -> None:
    system = tmp_path / "system.txt"
    system.write_text("3B 00\n\tsome other card\n")
    target = tmp_path / "cache" / "smartcard_list.txt"

    assert smartcard_list.install(target, system)
    text = target.read_text()
    assert text.startswith("3B 00\n\tsome other card\n\n") and text.endswith(
        smartcard_list.entry())
    assert not smartcard_list.install(target, system)
    assert target.read_text() == text
    assert list(target.parent.iterdir()) == [target]  # no temporary file left behind


def test_pcsc_tools_names_the_card_after_install(user_env: dict[str, str]) -> None:
    if shutil.which("ATR_analysis") is None:
        unavailable("ATR_analysis not installed (Debian package pcsc-tools; make test installs it)")
    run = nettx("card", "atr-list", "--install", env=user_env)
    assert run.returncode == 0, run.stderr
    listed = Path(user_env["HOME"]) / ".cache" / "smartcard_list.txt"
    assert f"added the nettx card to {listed}" in run.stdout
    # every card the system list knows is still known
    assert smartcard_list.SYSTEM_LIST.read_text() in listed.read_text()

    for atr in (ATR, ATR_CRC):
        shown = subprocess.run(["ATR_analysis", atr.hex(" ").upper()], env=user_env,
                               capture_output=True, text=True, timeout=60).stdout
        assert f"Possibly identified card (using {listed})" in shown
        assert "nettx virtual smart card (EP 0791901" in shown

    again = nettx("card", "atr-list", "--install", env=user_env)
    assert "already names the nettx card" in again.stdout
