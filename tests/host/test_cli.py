"""The `nettx` command line, through click's CliRunner and as a real process.

Commands that talk to a card start their own card process on the embedded reader (a child
of this process, stopped by PID when the command ends), exactly as a user's shell would.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from card_applet import blom
from card_applet.atr import ATR
from card_applet.state import read_state
from host.centre.authority import BATCH, Authority, read_row_file
from host.cli import main as cli
from host.parties.softcard import software_card

REPO = Path(__file__).resolve().parents[2]
VECTORS_PATH = REPO / "docs" / "vectors" / "blom-v1.json"
HOLDER = "holder:alice@example.org"
SELLER = "seller:shop.example"
PIN, PUK = "1234", "12345678"
SELECT = "00A404000AF0455030373931393031"  # no Le: the FCI waits behind 61xx


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """`main` calls logging.basicConfig; keep its handler (bound to the runner's stream,
    closed after the run) from outliving the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """`main` sets umask 077 for the process (the CLI's files are 0600): keep it in the test."""
    umask = os.umask(0o077)
    os.umask(umask)
    yield
    os.umask(umask)


def nettx(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """In this process; secrets (NETTX_PIN, ...) in `env`, never in the arguments."""
    return CliRunner().invoke(cli.main, [str(a) for a in args], env=env)


def nettx_process(*args: str | Path, home: Path,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real thing: a `nettx` process, its own stdout and stderr, its exit status."""
    return subprocess.run([sys.executable, "-m", "host.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NETTX_HOME": str(home), **(env or {})})


def pin(value: str = PIN) -> dict[str, str]:
    return {"NETTX_PIN": value}


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def assert_one_error_line(result: Result) -> str:
    """A refusal: exit 1, one line "error: ..." on stderr, nothing on stdout, no exception."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def assert_usage_error(result: Result) -> str:
    """click's own usage error: exit 2, "Usage:" and one "Error:" line, no exception."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Usage:" in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in result.output
    return line


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    ok(nettx("authority", "init", "--home", home, "--k", "8"))
    return home


def personalised_card(home: Path, path: Path, holder: str = HOLDER, pin: str = PIN,
                      puk: str = PUK) -> Path:
    ok(nettx("card", "new", "--home", home, "--state", path))
    ok(nettx("authority", "personalise", "--home", home, "--state", path, "--holder", holder,
             env={"NETTX_PIN": pin, "NETTX_PUK": puk}))
    return path


@pytest.fixture
def card(home: Path, tmp_path: Path) -> Path:
    return personalised_card(home, tmp_path / "alice.card.json")


# -- the centre -------------------------------------------------------------------------------


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
    assert not (tmp_path / "h" / "authority" / "master.json").exists()


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
    monkeypatch.setattr(cli, "err_console", Console(file=terminal, force_terminal=True))
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


# -- the card ---------------------------------------------------------------------------------


def test_card_new_then_personalise(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    out = ok(nettx("card", "new", "--home", home, "--state", path))
    serial = read_state(path).serial.hex()
    assert out == f"blank card {serial} written to {path}\n"

    out = ok(nettx("authority", "personalise", "--home", home, "--state", path,
                   "--holder", HOLDER, env={"NETTX_PIN": PIN, "NETTX_PUK": PUK}))

    assert out == f"card {serial} personalised for {HOLDER} (k = 8) and locked\n"
    state = read_state(path)
    assert state.holder_id == HOLDER.encode() and state.k == 8
    # a second personalisation of the same card, or of the same holder, is refused
    assert_one_error_line(nettx("authority", "personalise", "--home", home, "--state", path,
                                "--holder", "holder:bob@example.org",
                                env={"NETTX_PIN": PIN, "NETTX_PUK": PUK}))
    assert_one_error_line(nettx("authority", "personalise", "--home", home,
                                "--state", tmp_path / "other.json", "--holder", HOLDER,
                                env={"NETTX_PIN": PIN, "NETTX_PUK": PUK}))


def test_card_info(card: Path) -> None:
    out = ok(nettx("card", "info", "--state", card))

    assert out.splitlines()[0] == f"ATR {ATR.hex(' ').upper()}"
    assert read_state(card).serial.hex() in out
    assert HOLDER in out and "operational" in out
    assert re.search(r"PIN tries\s+│\s+3/3", out)
    assert "k = 8" in out


def test_card_encrypt_opens_in_the_sellers_software_card(home: Path, card: Path) -> None:
    out = ok(nettx("card", "encrypt", "--home", home, "--state", card, "--peer", SELLER,
                   "--text", "hi", "--aad", "h", "--context", "c", env=pin()))

    sealed = bytes.fromhex(out.strip())
    seller = software_card(SELLER, Authority(home).issue([SELLER])[SELLER])
    seller.set_peer(HOLDER)
    assert seller.decrypt(sealed, aad=b"h", context=b"c") == b"hi"
    assert read_state(card).atc == 1


def test_card_decrypt_on_a_second_card_playing_the_seller(home: Path, card: Path,
                                                          tmp_path: Path) -> None:
    seller_card = personalised_card(home, tmp_path / "seller.card.json", holder=SELLER,
                                    pin="5678", puk="87654321")
    sealed = ok(nettx("card", "encrypt", "--home", home, "--holder-id", HOLDER, "--state", card,
                      "--peer", SELLER, "--text", "two items", "--aad", "h", "--context", "c",
                      env=pin())).strip()

    out = ok(nettx("card", "decrypt", "--home", home, "--holder-id", SELLER,
                   "--state", seller_card, "--peer", HOLDER, "--hex", sealed,
                   "--aad", "h", "--context", "c", env=pin("5678")))

    assert out == "two items\n"
    # other associated data: the tag does not verify, one error line
    line = assert_one_error_line(nettx("card", "decrypt", "--home", home,
                                       "--holder-id", SELLER, "--state", seller_card,
                                       "--peer", HOLDER, "--hex", sealed,
                                       "--aad", "x", "--context", "c", env=pin("5678")))
    assert "6988" in line


def test_card_apdu_prints_responses_and_status_words(card: Path) -> None:
    serial = read_state(card).serial

    out = ok(nettx("card", "apdu", "--state", card, SELECT, SELECT + "00", "00 CA 00 C2 00",
                   "00:CA:DF:11:00 = 6A88"))

    no_le, with_le, get_serial, get_row = out.splitlines()
    # 61xx is followed by GET RESPONSE, as opensc-tool does: both SELECTs show the FCI
    assert no_le.startswith("6F ") and no_le.endswith(" 9000  success")
    assert with_le == no_le
    assert get_serial == f"{serial.hex(' ').upper()} 9000  success"
    assert get_row == "6A88  referenced data not found"  # the row never leaves, as expected


def test_card_apdu_raw_shows_61xx_and_echo_shows_the_command(card: Path) -> None:
    out = ok(nettx("card", "apdu", "--state", card, "--raw", "--echo", SELECT + "= 61XX"))
    sent, answer = out.splitlines()
    assert sent == "> " + bytes.fromhex(SELECT).hex(" ").upper()
    assert re.fullmatch(r"< 61[0-9A-F]{2}  \d+ more bytes available \(GET RESPONSE\)", answer)


def test_card_apdu_an_unexpected_status_word_exits_non_zero(card: Path) -> None:
    result = nettx("card", "apdu", "--state", card, SELECT, "00CADF1100", "00CA00C200")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "6A88  referenced data not found"
    assert len(result.stdout.splitlines()) == 2  # stopped at the mismatch
    assert "argument 2: 00 CA DF 11: card answered 6A88 (referenced data not found), " \
           "expected 9000" in result.stderr


def test_card_apdu_runs_a_scriptor_script(card: Path, tmp_path: Path) -> None:
    script = tmp_path / "select.apdu"
    script.write_text(f"# select the applet, read the serial\n{SELECT}\nreset\n"
                      f"{SELECT} = 9000\n00 CA 00 C2 00\nexit\n00 CA DF 11 00\n")
    out = ok(nettx("card", "apdu", "--state", card, "--script", script))
    lines = out.splitlines()
    assert len(lines) == 4 and lines[1].startswith("reset: ATR 3B")
    assert lines[3].endswith("9000  success")  # nothing after `exit` was sent

    script.write_text("00A40400\n00A4 04\n")
    line = assert_usage_error(nettx("card", "apdu", "--state", card, "--script", script))
    assert "select.apdu:2: '00A4 04' is not a command APDU: 3 bytes" in line
    line = assert_usage_error(nettx("card", "apdu", "--state", card, "--script",
                                    tmp_path / "missing.apdu"))
    assert "cannot read" in line


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


# -- refusals: one line, a non-zero exit, never a traceback -----------------------------------


@pytest.mark.parametrize("args", [
    ("authority", "issue", "seller:a"),
    ("authority", "list"),
    ("authority", "pair-key", "seller:a", "holder:b"),
    ("card", "new", "--state", "{tmp}/c.json"),
])
def test_an_uninitialised_home_is_one_error_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    argv = [a.format(tmp=tmp_path) for a in args]
    line = assert_one_error_line(nettx(*argv[:2], "--home", tmp_path / "empty", *argv[2:]))
    assert "authority init" in line


@pytest.mark.parametrize("bad", ["", "x" * 65])
def test_a_bad_identifier_is_a_usage_error(home: Path, bad: str) -> None:
    line = assert_usage_error(nettx("authority", "issue", "--home", home, "seller:ok", bad))
    assert "identifier" in line
    assert_usage_error(nettx("authority", "pair-key", "--home", home, "seller:ok", bad))
    assert Authority(home).registered() == []


def test_a_wrong_pin_names_the_status_word(home: Path, card: Path) -> None:
    line = assert_one_error_line(nettx("card", "encrypt", "--home", home, "--state", card,
                                       "--peer", SELLER, "--text", "hi", env=pin("9999")))
    assert "63C2" in line
    assert read_state(card).pin_tries == 2


@pytest.mark.parametrize("bad", ["abcd", "12", "123456789", "１２３４"])
def test_a_pin_that_is_not_4_to_8_digits_is_refused_before_any_apdu(home: Path, card: Path,
                                                                     bad: str) -> None:
    line = assert_usage_error(nettx("card", "encrypt", "--home", home, "--state", card,
                                    "--peer", SELLER, "--text", "hi", env=pin(bad)))
    assert "NETTX_PIN" in line and "the PIN" in line
    line = assert_usage_error(nettx("card", "change-pin", "--home", home, "--state", card,
                                    env={"NETTX_PIN": PIN, "NETTX_NEW_PIN": bad}))
    assert "NETTX_NEW_PIN" in line
    assert_usage_error(nettx("card", "unblock", "--home", home, "--state", card,
                             env={"NETTX_PUK": bad}))
    assert read_state(card).pin_tries == 3


def test_bad_hex_is_a_usage_error(home: Path, card: Path) -> None:
    line = assert_usage_error(nettx("card", "apdu", "--state", card, "00A4zz"))
    assert "'z' is not a hex digit" in line
    line = assert_usage_error(nettx("card", "apdu", "--state", card, "00A4"))  # not an APDU
    assert "2 bytes: a command APDU starts with 4 (CLA INS P1 P2)" in line
    assert "expected status word" in assert_usage_error(
        nettx("card", "apdu", "--state", card, "00A40400 = 90"))
    assert_usage_error(nettx("card", "apdu", "--state", card))  # nothing to send
    assert_usage_error(nettx("card", "decrypt", "--home", home, "--state", card,
                             "--peer", SELLER, "--hex", "0g", env=pin()))


def test_a_missing_or_broken_state_file_is_one_error_line(tmp_path: Path) -> None:
    line = assert_one_error_line(nettx("card", "info", "--state", tmp_path / "absent.json"))
    assert "no card state" in line
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    line = assert_one_error_line(nettx("card", "info", "--state", broken))
    assert "did not start" in line and "is not a card state" in line


def test_refusals_in_a_real_process_have_no_traceback(home: Path, card: Path,
                                                       tmp_path: Path) -> None:
    for args in (("authority", "list", "--home", tmp_path / "empty"),
                 ("card", "encrypt", "--state", card, "--peer", SELLER, "--text", "hi"),
                 ("card", "info", "--state", tmp_path / "absent.json")):
        run = nettx_process(*args, home=home, env=pin("9999"))
        assert run.returncode == 1, run.stderr
        assert run.stdout == ""
        assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("error: ")
    run = nettx_process("card", "encrypt", "--state", card, "--peer", SELLER,
                        "--text", "hi", home=tmp_path, env=pin("abcd"))
    assert run.returncode == 2 and "Traceback" not in run.stderr


# -- the demo ---------------------------------------------------------------------------------


def test_demo_runs_to_completion(tmp_path: Path) -> None:
    run = nettx_process("demo", "--k", "16", home=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "demo complete" in run.stdout
    assert "Traceback" not in run.stderr
    out = " ".join(run.stdout.split())  # rich wraps long lines
    assert "status │ completed" in out or "completed" in out
    # the four attacks of the issue (the seller's two ways to the card number count as one),
    # a rogue seller at another address and an on-path swap of the delivery company
    assert out.count("refused:") == 7
    for reason in ("forged", "policy hands card_number to the seller", "replay",
                   "unconfirmed", "is seller:rogue.example, not seller:shop.example",
                   "the order form is not seller:shop.example's"):
        assert reason in out, reason
    assert "none of the attacks moved it" in out


def test_demo_can_run_again_in_a_kept_home(tmp_path: Path) -> None:
    for _ in range(2):
        run = nettx_process("demo", "--k", "8", "--home", tmp_path / "kept", home=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "demo complete" in run.stdout
