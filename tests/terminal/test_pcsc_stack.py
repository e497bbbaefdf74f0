"""The card as the real PC/SC tools see it: pcscd + vpcd, pcsc_scan, opensc-tool, pyscard;
and what pcscd-vpcd exposes: vpcd only on loopback, a private pcscd beside the system's.

Needs root and Debian's pcscd, vsmartcard-vpcd, pcsc-tools, opensc, socat and iproute2
(`make test` installs them); skipped outside CI when missing, a failure under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from card_applet.atr import ATR
from card_applet.vocabulary import AID
from terminal.cardproc import CardProcess
from terminal.errors import ReaderError
from terminal.pcsc import PcscReader, list_readers, wait_for_card, wait_until_card_gone
from terminal.ports import free_vpcd_port
from terminal.session import CardSession
from tests.conftest import (
    HOLDER,
    PCSC_READER,
    PCSCD_SCRIPT,
    PCSCD_SOCKET,
    PIN,
    REPO,
    SELLER,
    Centre,
    Pcscd,
    require_pcsc_stack,
)

pytestmark = pytest.mark.pcscd


def run(*argv: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{argv}: {out.stderr}"
    return out.stdout


def test_pcsc_scan_lists_reader_and_shows_our_atr(served_card: CardProcess) -> None:
    assert "Virtual PCD 00 00" in run("pcsc_scan", "-r")
    shown = run("pcsc_scan", "-n", "-t", "2")
    assert "Card inserted" in shown
    assert ATR.hex(" ").upper() in shown


def test_opensc_tool_lists_card_and_reads_atr(served_card: CardProcess) -> None:
    listing = run("opensc-tool", "-l")
    line = next(x for x in listing.splitlines() if "Virtual PCD 00 00" in x)
    assert "Yes" in line
    assert ATR.hex(":") in run("opensc-tool", "-r", "0", "-a")


def test_opensc_tool_select_by_aid(served_card: CardProcess) -> None:
    apdu = "00 A4 04 00 0A " + AID.hex(" ").upper() + " 00"
    out = run("opensc-tool", "-r", "0", "-s", apdu)
    assert "SW1=0x90, SW2=0x00" in out
    assert "84 0A F0 45 50 30 37 39 31 39 30 31" in out  # FCI: 6F { 84 AID, A5 {...} }
    assert out.split("\n")[2].startswith("6F ")
    unknown = run("opensc-tool", "-r", "0", "-s", "00 A4 04 00 05 A0 00 00 00 03")
    assert "SW1=0x6A, SW2=0x82" in unknown


def test_pyscard_session_derives_and_encrypts(served_card: CardProcess, centre: Centre) -> None:
    assert "Virtual PCD 00 00" in list_readers()
    reader = PcscReader("Virtual PCD 00 00")
    try:
        session = CardSession(reader)
        assert session.select().holder_id == HOLDER
        session.verify_pin(PIN)
        session.set_peer(SELLER)
        sealed = session.encrypt(b"through pcscd", aad=b"hdr", context=b"o1")
    finally:
        reader.close()
    seller = centre.seller()
    seller.set_peer(HOLDER)
    assert seller.decrypt(sealed, aad=b"hdr", context=b"o1") == b"through pcscd"


def test_extended_apdu_of_4000_bytes_passes_pcscd(served_card: CardProcess,
                                                  centre: Centre) -> None:
    reader = PcscReader(0)
    try:
        session = CardSession(reader, extended=True)
        session.select()
        session.verify_pin(PIN)
        session.set_peer(SELLER)
        sealed = session.encrypt(b"\x5a" * 4000)
    finally:
        reader.close()
    assert len(sealed) == 4000 + 33


def test_card_reconnects_after_pcscd_restart(pcscd: Pcscd, served_card: CardProcess) -> None:
    reader = PcscReader(0)
    CardSession(reader).select()
    reader.close()
    old_pid = pcscd.pid
    pcscd.restart()
    assert pcscd.pid != old_pid
    assert served_card.alive(), "the card process must survive its reader going away"
    reader = wait_for_card(PCSC_READER, timeout=20)  # a new context: the old one died with pcscd
    try:
        assert CardSession(reader).select().holder_id == HOLDER
    finally:
        reader.close()


def test_stale_handle_after_card_left_raises_reader_error(pcscd: Pcscd, card_state: Path) -> None:
    with CardProcess(card_state, "127.0.0.1", pcscd.port):
        reader = wait_for_card(PCSC_READER)
        CardSession(reader).select()
    wait_until_card_gone(PCSC_READER)
    deadline = time.monotonic() + 5
    with pytest.raises(ReaderError):
        while time.monotonic() < deadline:
            CardSession(reader).select()
    reader.close()


def test_the_suite_talks_to_its_private_pcscd(pcscd: Pcscd) -> None:
    assert os.environ["PCSCLITE_CSOCK_NAME"] == str(PCSCD_SOCKET)
    assert PCSCD_SOCKET.is_socket()
    pid_file = PCSCD_SOCKET.parent / "pcscd.pid"  # written by pcscd as /run/pcscd/pcscd.pid
    assert int("".join(ch for ch in pid_file.read_text() if ch.isdigit())) == pcscd.pid


# -- what pcscd-vpcd exposes: scenarios in namespaces of their own ----------------------------


def scenario(name: str, tmp_path: Path, *extra: str) -> dict:
    """Runs tests/terminal/pcscd_scenarios.py NAME in new network and mount namespaces
    (nothing it does reaches the machine's network or its /run/pcscd)."""
    require_pcsc_stack()
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "--",
            sys.executable, "-m", "tests.terminal.pcscd_scenarios", name,
            "--port", str(free_vpcd_port()), "--run-dir", str(tmp_path / "pcscd"), *extra]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"scenario {name} failed: {out.stderr[-3000:]}"
    return json.loads(out.stdout.splitlines()[-1])


def test_a_remote_host_cannot_insert_a_card_through_vpcd(card_state: Path,
                                                        tmp_path: Path) -> None:
    """The attack: another host connects to vpcd's ports at this host's address first and
    answers as the card (it would receive VERIFY with the PIN). It is refused on both slots,
    pcscd never sees its ATR, and a card on loopback still works."""
    facts = scenario("remote-card", tmp_path, "--state", str(card_state))
    assert facts["warning"] == ""
    assert facts["remote"]["ports"] == {port: "ConnectionRefusedError"
                                        for port in facts["remote"]["ports"]}
    assert len(facts["remote"]["ports"]) == 2
    assert facts["rogue_card_seen"] is False
    assert facts["loopback_holder"] == HOLDER


def test_all_interfaces_is_explicit_and_warns(card_state: Path, tmp_path: Path) -> None:
    """--all-interfaces is Debian's exposure, asked for by name: the warning is printed, and
    the same remote host does become the card (which also shows the attack above is real)."""
    facts = scenario("remote-card", tmp_path, "--state", str(card_state), "--all-interfaces")
    assert "WARNING: vpcd listens on ALL interfaces" in facts["warning"]
    assert "PIN" in facts["warning"]
    assert set(facts["remote"]["ports"].values()) == {"accepted"}
    assert facts["rogue_card_seen"] is True
    assert facts["loopback_holder"] == HOLDER


def test_a_system_pcscd_is_left_alone(card_state: Path, tmp_path: Path) -> None:
    """A real pcscd holds /run/pcscd (the scenario's own, in its mount namespace) as a
    desktop's system pcscd does; our private pcscd serves the card beside it, and the system
    one keeps its PID, pid file and socket, and still answers."""
    facts = scenario("system-pcscd", tmp_path, "--state", str(card_state))
    before, during, after = facts["before"], facts["during"], facts["after"]
    assert facts["system_pid_is_the_one_started"]
    assert before["alive"] and before["answers"]
    assert during == before
    assert after == before
    assert facts["private_pid"] != before["pid"]
    assert facts["holder"] == HOLDER
    assert PCSC_READER in facts["private_readers"]


def test_start_without_root_is_a_clear_error(tmp_path: Path) -> None:
    require_pcsc_stack()
    run_dir = tmp_path / "user"
    out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                          str(PCSCD_SCRIPT), "start", "--private", "--run-dir", str(run_dir)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip() == ("pcscd-vpcd: start needs root (pcscd, and the namespaces "
                                  "that keep vpcd on loopback); run it with sudo")
    assert not run_dir.exists()


def test_the_old_loopback_flag_explains_itself() -> None:
    out = subprocess.run([str(PCSCD_SCRIPT), "start", "--loopback"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert "--connect-out" in out.stderr
    assert "Traceback" not in out.stderr
