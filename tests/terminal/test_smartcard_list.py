"""pcsc-tools names the card: `nettx card atr-list --install` puts its ATRs in the per-user
list that ATR_analysis (what pcsc_scan runs for each card) reads first."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from card_applet.atr import ATR, ATR_CRC, AtrFault
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


def test_every_atr_of_pcsc_tools_list_parses_or_is_refused_never_crashes(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Over the 3,803 plain ATRs of Debian's pcsc-tools list (its pattern lines are left out):
    each is accepted or refused with an AtrError naming its fault; any other exception is a
    crash and fails the test. The counts are printed (pytest -s) for the record."""
    if not smartcard_list.SYSTEM_LIST.exists():
        unavailable(f"{smartcard_list.SYSTEM_LIST} missing (Debian package pcsc-tools)")
    atrs = smartcard_list.listed_atrs()
    result = smartcard_list.survey(atrs)
    with capsys.disabled():
        print("\n" + "\n".join(result.lines()))
    assert result.crashed == []
    assert result.total == len(atrs) > 3000
    assert result.accepted > 0.9 * len(atrs)
    # the T=15-in-TD1 ATRs that used to be read as T=0 are among the refused
    assert result.refused[AtrFault.T15_IN_TD1] >= 1


def test_the_survey_counts_by_fault() -> None:
    result = smartcard_list.survey([ATR, bytes.fromhex("3B 81 1F 00 CC 52"),
                                    bytes.fromhex("3B 04 60 89"), bytes.fromhex("3B 34 00 00 30 "
                                                                                "42 30 30")])
    assert result.accepted == 1 and result.total == 4
    assert result.refused == {AtrFault.T15_IN_TD1: 1, AtrFault.TRUNCATED: 1,
                              AtrFault.RESERVED: 1}
    assert result.lines()[0] == "4 ATRs: 1 accepted, 3 refused, 0 crashed"


def test_listed_atrs_leaves_out_patterns_and_descriptions(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n3B 00\n\tsome card\n\n3B .. 00\n\tmany cards\n"
                       "3B [01] 00\n3F 00\n\t3B 01 00\n")
    assert smartcard_list.listed_atrs(listing) == [bytes.fromhex("3B 00"),
                                                   bytes.fromhex("3F 00")]


def test_cli_survey(tmp_path: Path, user_env: dict[str, str]) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("3B 00\n\tok\n\n3B 81 1F 00 CC 52\n\tT=15 in TD1\n")
    run = nettx("card", "atr-list", "--survey", "--file", str(listing), env=user_env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "2 ATRs: 1 accepted, 1 refused, 0 crashed",
        "  refused, T=15 in TD1: 1 (e.g. 3B 81 1F 00 CC 52)"]
    missing = nettx("card", "atr-list", "--survey", "--file", str(tmp_path / "none"),
                    env=user_env)
    assert missing.returncode == 1 and missing.stderr.startswith("error: cannot read")


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
