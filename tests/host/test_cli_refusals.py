"""Refusals on the command line: one line, a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from card_applet.state import read_state
from host.centre.authority import Authority
from tests.host.cli_helpers import (
    PIN,
    SELLER,
    assert_one_error_line,
    assert_usage_error,
    nettx,
    nettx_process,
    pin,
)

pytestmark = pytest.mark.usefixtures("restore_process_state")


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
