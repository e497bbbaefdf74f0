"""`nettx card ...` and `nettx authority personalise`: making, personalising and using a card,
raw APDUs included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from card_applet import keys
from card_applet.atr import ATR
from card_applet.state import read_state
from card_applet.vocabulary import ATC_BLOCK
from host.centre.authority import Authority
from host.parties.softcard import software_card
from tests.host.cli_helpers import (
    HOLDER,
    PIN,
    PUK,
    SELECT,
    SELLER,
    assert_one_error_line,
    assert_usage_error,
    nettx,
    ok,
    personalised_card,
    pin,
)

pytestmark = pytest.mark.usefixtures("restore_process_state")


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
    assert keys.box_counter(sealed) == 1
    assert read_state(card).atc_reserved == ATC_BLOCK  # its block, reserved before the box


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
