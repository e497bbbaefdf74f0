"""`nettx authority ...`: the centre's master, rows, listing and pair keys."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from card_applet import blom
from card_applet.state import read_state
from host.centre.authority import BATCH, Authority, read_row_file
from host.cli import authority as authority_cli
from tests.host.cli_helpers import (
    HOLDER,
    REPO,
    SELLER,
    VECTORS_PATH,
    assert_one_error_line,
    nettx,
    ok,
)

pytestmark = pytest.mark.usefixtures("restore_process_state")


def test_authority_init_creates_the_centre(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = ok(nettx("authority", "init", "--home", home, "--k", "8"))

    assert out == f"centre initialised in {home / 'authority'}: k = 8\n"
    assert Authority(home).master.k == 8
    assert_one_error_line(nettx("authority", "init", "--home", home, "--k", "8"))
    ok(nettx("authority", "init", "--home", home, "--k", "4", "--force"))
    assert Authority(home).master.k == 4


def test_pair_key_from_imported_vectors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    vectors = json.loads(VECTORS_PATH.read_text())
    ok(nettx("authority", "init", "--home", home, "--master", VECTORS_PATH))

    for pair in vectors["pairs"]:
        out = ok(nettx("authority", "pair-key", "--home", home, pair["a"], pair["b"]))
        assert out == pair["pair_key_hex"] + "\n"
    reversed_pair = vectors["pairs"][0]
    out = ok(nettx("authority", "pair-key", "--home", home, reversed_pair["b"],
                   reversed_pair["a"]))
    assert out == reversed_pair["pair_key_hex"] + "\n"


def test_authority_init_refuses_a_bad_master_file(tmp_path: Path) -> None:
    bad = tmp_path / "master.json"
    bad.write_text("{not json")
    assert_one_error_line(nettx("authority", "init", "--home", tmp_path / "h", "--master", bad))
    bad.write_text('{"master_upper_triangle_hex": [["01", "02"], ["03", "04"]]}')
    assert_one_error_line(nettx("authority", "init", "--home", tmp_path / "h", "--master", bad))
    assert not (tmp_path / "h" / "authority").exists()


def test_issue_writes_row_files_and_clean_lines(home: Path, tmp_path: Path) -> None:
    ids = [SELLER, "issuer:card-manager.example", "delivery:parcel.example"]
    out_dir = tmp_path / "rows"

    result = nettx("authority", "issue", "--home", home, "--out", out_dir, *ids)

    lines = ok(result).splitlines()
    assert result.stderr == ""  # no progress bar drawn into a pipe
    assert len(lines) == len(ids)
    centre = Authority(home)
    for ident, line in zip(ids, lines, strict=True):
        path = out_dir / f"{ident.replace(':', '_')}.row.json"
        assert line == f"{ident}: row of k = 8 written to {path}"
        assert read_row_file(path) == (ident, centre.rows_for([blom.x_of(ident)])[0])


def test_issue_output_stays_clean_with_a_progress_bar_on_a_terminal(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = io.StringIO()
    monkeypatch.setattr(authority_cli, "err_console", Console(file=terminal, force_terminal=True))
    ids = [f"holder:{n}@batch.example" for n in range(BATCH + 6)]  # two batches

    lines = ok(nettx("authority", "issue", "--home", home, "--out", tmp_path / "rows",
                     *ids)).splitlines()

    assert len(lines) == len(ids)
    for ident, line in zip(ids, lines, strict=True):
        assert re.fullmatch(rf"{re.escape(ident)}: row of k = 8 written to \S+\.row\.json",
                            line)


def test_issue_default_out_is_home_rows_and_refuses_overwriting(home: Path) -> None:
    ok(nettx("authority", "issue", "--home", home, "seller:a"))
    assert read_row_file(home / "rows" / "seller_a.row.json")[0] == "seller:a"

    # "seller_a" would land in the same file name: refused before anything is issued
    assert_one_error_line(nettx("authority", "issue", "--home", home, "seller_a"))
    assert_one_error_line(nettx("authority", "issue", "--home", home, "seller/b", "seller_b"))
    assert [r[0] for r in Authority(home).registered()] == ["seller:a"]


def test_identifiers_are_printed_literally(home: Path, tmp_path: Path) -> None:
    """rich would read "[/x]" as markup and ":x:" as an emoji; the CLI prints data as is."""
    ids = ["seller:x", "seller:[/x]", "seller:[bold]y"]
    lines = ok(nettx("authority", "issue", "--home", home, "--out", tmp_path / "r",
                     *ids)).splitlines()
    assert [line.split(": row of k")[0] for line in lines] == ids
    listing = ok(nettx("authority", "list", "--home", home))
    for ident in ids:
        assert f" {ident} " in listing


def test_authority_list_shows_identifiers_and_card_serials(home: Path, card: Path) -> None:
    ok(nettx("authority", "issue", "--home", home, SELLER))

    out = ok(nettx("authority", "list", "--home", home))

    serial = read_state(card).serial.hex()
    (holder_line,) = [line for line in out.splitlines() if HOLDER in line]
    assert serial in holder_line
    assert blom.x_of(HOLDER).to_bytes(32, "big").hex()[:16] in holder_line
    (seller_line,) = [line for line in out.splitlines() if SELLER in line]
    assert " - " in seller_line



# What only talking to a card, serving a party or a database needs: a command that does none of
# that (the centre's) must not import it. Start-up is every command's cost, and the centre's
# issuance is measured against its floor (bench/centre.py).
NOT_FOR_THE_CENTRE = ("smartcard", "serial", "asyncio", "uvloop", "cbor2", "psycopg",
                      "psycopg_pool", "Crypto", "cryptography", "host.parties", "host.protocol",
                      "host.storage", "host.cli.card", "terminal.readers", "terminal.pcsc",
                      "terminal.trace", "card_applet.applet",
                      "rich")  # its consoles are made on first use: issue prints plain lines
IMPORTED_BY = """
import sys
from host.cli.main import main
main(sys.argv[1:], standalone_mode=False)
print("\\n".join(sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [("authority", "issue", HOLDER, SELLER),
                                  ("authority", "issue", "--help")], ids=["issue", "help"])
def test_the_centre_imports_no_card_party_or_database_code(tmp_path: Path,
                                                           args: tuple[str, ...]) -> None:
    home = tmp_path / "home"
    ok(nettx("authority", "init", "--home", home, "--k", "4"))
    run = subprocess.run([sys.executable, "-c", IMPORTED_BY, "--home", str(home), *args],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    modules = run.stderr.split()
    assert {"host.cli.main", "host.cli.authority", "host.centre.authority"} <= set(modules)
    loaded = [m for m in modules for name in NOT_FOR_THE_CENTRE
              if m == name or m.startswith(name + ".")]
    assert loaded == [], loaded
    # numpy (about 70 ms of start-up) is for computing rows only
    assert ("numpy" in modules) == (args[-1] != "--help")
