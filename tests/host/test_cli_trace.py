"""`nettx --trace`: APDUs on stderr, never a PIN, PUK or row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from card_applet import blom
from host.centre.authority import Authority
from tests.host.cli_helpers import (
    HOLDER,
    SELLER,
    nettx,
    nettx_process,
    ok,
    pin,
)

pytestmark = pytest.mark.usefixtures("restore_process_state")


def test_trace_shows_apdus_and_never_the_pin(home: Path, card: Path) -> None:
    run = nettx_process("--trace", "card", "encrypt", "--state", card,
                        "--peer", SELLER, "--text", "hi", home=home, env=pin())

    assert run.returncode == 0, run.stderr
    assert re.search(r"SEND 00 A4 04 00", run.stderr)
    assert re.search(r"RECV .*SW=9000", run.stderr)
    (verify,) = [line for line in run.stderr.splitlines() if "SEND 00 20 00 81" in line]
    assert verify.endswith("<8 bytes redacted>")
    assert "31 32 33 34" not in run.stderr and "31323334" not in run.stderr
    assert len(bytes.fromhex(run.stdout.strip())) > 2


def test_trace_covers_raw_apdus_too(card: Path, tmp_path: Path) -> None:
    run = nettx_process("--trace", "card", "apdu", "--state", card,
                        "00A404000AF0455030373931393031", "0020008108" + "31323334FFFFFFFF",
                        home=tmp_path)

    assert run.returncode == 0, run.stderr
    assert re.search(r"SEND 00 A4 04 00 Lc=10 F0 45 50", run.stderr)
    assert re.search(r"RECV .*SW=6172", run.stderr)
    (verify,) = [line for line in run.stderr.splitlines() if "SEND 00 20 00 81" in line]
    assert verify.endswith("<8 bytes redacted>")
    assert "31 32 33 34" not in run.stderr


def test_trace_of_personalisation_shows_neither_pin_puk_nor_row(home: Path,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    ok(nettx("card", "new", "--home", home, "--state", path))
    run = nettx_process("--trace", "authority", "personalise", "--home", home, "--state", path,
                        "--holder", HOLDER, home=home,
                        env={"NETTX_PIN": "9753", "NETTX_PUK": "86420864"})

    assert run.returncode == 0, run.stderr
    assert "SEND 80 E2 00 00" in run.stderr and "redacted" in run.stderr
    assert "39 37 35 33" not in run.stderr and "38 36 34 32" not in run.stderr
    (row,) = Authority(home).rows_for([blom.x_of(HOLDER)])
    for element in row:
        assert blom.element_to_bytes(element)[:8].hex(" ").upper() not in run.stderr
