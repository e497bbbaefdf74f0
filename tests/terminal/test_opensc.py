"""Generic middleware finds the application: OpenSC's tools against the card through the
suite's private pcscd + vpcd. opensc-explorer selects the MF and reads EF.DIR and
EF.ATR/INFO; pkcs15-tool, given OpenSC's generic ISO 7816 driver (vpcd_config/opensc.conf),
lists the nettx application from EF.DIR, reads the PKCS#15 token info and PIN object from
the application's files, and verifies the PIN with them (docs/apdu.md 3.17 to 3.19).

Needs root and Debian's pcscd, vsmartcard-vpcd and opensc (`make test` installs them);
skipped outside CI when missing, a failure under CI=true.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from card_applet.vocabulary import AID
from terminal.cardproc import CardProcess
from terminal.pcsc import PcscReader
from terminal.session import CardSession
from tests.conftest import PCSC_READER, PIN, REPO

pytestmark = pytest.mark.pcscd

OPENSC_CONF = REPO / "vpcd_config" / "opensc.conf"


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def run(*argv: str, stdin: str = "", conf: Path = OPENSC_CONF) -> Run:
    out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "OPENSC_CONF": str(conf)})
    return Run(out.returncode, out.stdout, out.stderr)


def test_pkcs15_tool_lists_the_nettx_application(served_card: CardProcess) -> None:
    listed = run("pkcs15-tool", "--list-applications")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == f"Application 'nettx EP0791901':\n\tAID: {AID.hex().upper()}\n\n"


def test_without_the_generic_driver_opensc_refuses_the_card(served_card: CardProcess,
                                                            tmp_path: Path) -> None:
    """Why vpcd_config/opensc.conf exists: no OpenSC driver knows the nettx ATR."""
    empty = tmp_path / "opensc.conf"
    empty.write_text("")
    refused = run("pkcs15-tool", "--list-applications", conf=empty)
    assert refused.returncode != 0
    assert "Card is invalid or cannot be handled" in refused.stderr


def test_pkcs15_tool_reads_the_token_info_and_the_pin(served_card: CardProcess) -> None:
    reader = PcscReader(PCSC_READER)
    try:
        serial = CardSession(reader).select().serial
    finally:
        reader.close()
    info = run("pkcs15-tool", "--list-info")
    assert info.returncode == 0, info.stderr
    assert "PKCS#15 Card [nettx EP0791901]:" in info.stdout
    assert f"Serial number  : {serial.hex()}" in info.stdout
    assert "Manufacturer ID: nettx" in info.stdout
    pins = run("pkcs15-tool", "--list-pins")
    assert pins.returncode == 0, pins.stderr
    for line in ("PIN [PIN]", "Flags          : [0x32], local, initialized, needs-padding",
                 "Length         : min_len:4, max_len:8, stored_len:8", "Pad char       : 0xFF",
                 "Reference      : 129 (0x81)", "Type           : ascii-numeric"):
        assert line in pins.stdout


def test_pkcs15_tool_verifies_the_pin(served_card: CardProcess) -> None:
    wrong = run("pkcs15-tool", "--verify-pin", "--auth-id", "01", "--pin", "9999")
    assert wrong.returncode != 0
    assert "PIN code or key incorrect" in wrong.stderr
    right = run("pkcs15-tool", "--verify-pin", "--auth-id", "01", "--pin", PIN)
    assert right.returncode == 0, right.stderr


def test_opensc_explorer_selects_the_mf_and_reads_ef_dir(served_card: CardProcess) -> None:
    explorer = run("opensc-explorer", stdin="cat 2F00\ninfo 2F00\ncat 2F01\n")
    assert explorer.returncode == 0, explorer.stderr
    assert "unable to select MF" not in explorer.stdout + explorer.stderr
    assert "OpenSC [3F00]> cat 2F00" in explorer.stdout
    assert ("00000000: 61 1D 4F 0A F0 45 50 30 37 39 31 39 30 31 50 0F a.O..EP0791901P.\n"
            "00000010: 6E 65 74 74 78 20 45 50 30 37 39 31 39 30 31    nettx EP0791901"
            ) in explorer.stdout
    for line in ("Working Elementary File  ID 2F00", "File path:               3F00/2F00",
                 "File size:               31 bytes", "EF structure:            Transparent",
                 "Life cycle:              Operational, activated"):
        assert line in explorer.stdout
    assert "00000000: 47 03 F4 01 C0 7F 66 0A 02 03 00 81 00 02 03 01" in explorer.stdout


def test_opensc_tool_names_the_card(served_card: CardProcess) -> None:
    """No OpenSC driver knows the card; its generic ISO 7816 driver, which handles it, gives
    every card it handles this one name."""
    named = run("opensc-tool", "-n")
    assert named.returncode == 0, named.stderr
    assert named.stdout == "Unsupported card\n"
