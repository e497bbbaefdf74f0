"""The card as the real PC/SC tools see it: pcscd + vpcd, pcsc_scan, opensc-tool, pyscard.

Needs Debian's pcscd, vsmartcard-vpcd, pcsc-tools and opensc (`make test` installs them);
skipped outside CI when missing, a failure under CI=true.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from card_applet.applet import AID
from card_applet.atr import ATR
from terminal.cardproc import CardProcess
from terminal.errors import ReaderError
from terminal.pcsc import PcscReader, list_readers, wait_for_card, wait_until_card_gone
from terminal.session import CardSession
from tests.conftest import (
    HOLDER,
    PCSC_READER,
    PIN,
    SELLER,
    Centre,
    Pcscd,
)

pytestmark = pytest.mark.pcscd


@pytest.fixture
def served_card(pcscd: Pcscd, card_state: Path, tmp_path: Path) -> Iterator[CardProcess]:
    with CardProcess(card_state, "127.0.0.1", pcscd.port, log_path=tmp_path / "card.log") as cp:
        wait_for_card(PCSC_READER).close()
        yield cp
    wait_until_card_gone(PCSC_READER)


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
