"""Traces people keep and share, through real `nettx` processes: `--trace-file`, `--trace-full`,
`--trace-pcap` read back by Wireshark's decoder (tshark), and the card's own trace in
`card serve --trace` and `python -m card_applet.serve --trace`. Secrets stay out of all of
them unless --trace-secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from card_applet.vocabulary import AID, encode_pin
from terminal.cardproc import CardProcess, SerialCardProcess
from terminal.embedded import EmbeddedReader
from terminal.serial import SerialReader
from terminal.session import CardSession
from tests.serial_support import socat_pair
from tests.tshark import fields, summary

REPO = Path(__file__).resolve().parents[2]
HOLDER = "holder:alice@example.org"
SELLER = "seller:shop.example"
# eight digits each: nothing else in a trace contains them by chance
PIN, PUK = "73914682", "52869137"
PIN_BLOCK = encode_pin(PIN)
PLAIN = "4970109876543210 12/29 Alice Martin, 5 avenue Foch, 75016 Paris, door code 4417"
SELECT = "00A404000A" + AID.hex().upper()  # no Le: the FCI waits behind 61xx
CONNECT_TIMEOUT = 15.0


def nettx(*args: str | Path, home: Path, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NETTX_")}
    return subprocess.run([sys.executable, "-m", "host.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**clean, "NETTX_HOME": str(home), **(env or {})})


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    return run.stdout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    ok(nettx("authority", "init", "--k", "8", home=home))
    return home


@pytest.fixture
def card(home: Path, tmp_path: Path) -> Path:
    path = tmp_path / "alice.card.json"
    ok(nettx("card", "new", "--state", path, home=home))
    ok(nettx("authority", "personalise", "--state", path, "--holder", HOLDER, home=home,
             env={"NETTX_PIN": PIN, "NETTX_PUK": PUK}))
    return path


def assert_no_secret(raw: bytes) -> None:
    assert PIN_BLOCK not in raw and PIN.encode() not in raw
    plain = PLAIN.encode()
    for start in range(0, len(plain) - 6, 6):
        assert plain[start:start + 6] not in raw, plain[start:start + 6]


# -- --trace-pcap -----------------------------------------------------------------------------


def test_a_pcap_of_card_apdu_decodes_as_iso_7816_in_tshark(card: Path, home: Path,
                                                          tmp_path: Path) -> None:
    capture = tmp_path / "apdu.pcap"
    ok(nettx("--trace-pcap", capture, "card", "apdu", "--state", card, SELECT,
             "00 CA 00 C2 00", home=home))

    assert capture.stat().st_mode & 0o777 == 0o600
    rows = fields(capture, "gsm_sim.apdu.ins", "gsm_sim.apdu.sw", "gsm_sim.aid")
    # raw exchanges: the 61xx and the GET RESPONSE that follows it are two frames
    assert [r[:2] for r in rows] == [["0xa4", "0x6172"], ["0xc0", "0x9000"],
                                     ["0xca", "0x9000"]]
    assert rows[0][2] == AID.hex()
    lines = summary(capture)
    assert "GSM SIM" in lines[0] and "SELECT" in lines[0]
    assert "GET RESPONSE" in lines[1] and "GET DATA" in lines[2]


def test_a_pcap_of_a_sealing_shows_verify_and_zeroes_pin_and_plaintext(
        card: Path, home: Path, tmp_path: Path) -> None:
    capture = tmp_path / "encrypt.pcap"
    ok(nettx("--trace-pcap", capture, "card", "encrypt", "--state", card, "--peer", SELLER,
             "--text", PLAIN, home=home, env={"NETTX_PIN": PIN}))

    rows = fields(capture, "gsm_sim.apdu.ins", "gsm_sim.apdu.sw")
    assert ["0x20", "0x9000"] in rows and ["0x2a", "0x9000"] in rows
    # the display filter README gives for the PIN checks
    (verify,) = summary(capture, "gsm_sim.apdu.ins == 0x20")
    assert "VERIFY" in verify
    assert_no_secret(capture.read_bytes())

    # the same with --trace-secrets: the PIN block is there, so its absence above is the
    # zeroing, not a capture that missed it
    shown = tmp_path / "secrets.pcap"
    run = nettx("--trace-secrets", "--trace-pcap", shown, "card", "encrypt", "--state", card,
                "--peer", SELLER, "--text", PLAIN, home=home, env={"NETTX_PIN": PIN})
    ok(run)
    assert PIN_BLOCK in shown.read_bytes() and PLAIN.encode() in shown.read_bytes()


def test_a_pcap_replaces_an_earlier_one_and_a_bad_path_is_one_error_line(
        card: Path, home: Path, tmp_path: Path) -> None:
    capture = tmp_path / "t.pcap"
    ok(nettx("--trace-pcap", capture, "card", "apdu", "--state", card, SELECT, home=home))
    ok(nettx("--trace-pcap", capture, "card", "apdu", "--state", card, "--raw", SELECT + "=61XX",
             home=home))
    assert [r[0] for r in fields(capture, "gsm_sim.apdu.ins")] == ["0xa4"]  # not 3 frames

    run = nettx("--trace-pcap", tmp_path / "no" / "dir.pcap", "card", "info",
                "--state", card, home=home)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.splitlines() == [
        f"error: --trace-pcap {tmp_path / 'no' / 'dir.pcap'}: No such file or directory"]


# -- --trace-file, --trace-full ---------------------------------------------------------------


def test_the_trace_goes_to_a_private_file_appended_to(card: Path, home: Path,
                                                     tmp_path: Path) -> None:
    log = tmp_path / "apdu.log"
    run = nettx("--trace-file", log, "card", "encrypt", "--state", card, "--peer", SELLER,
                "--text", PLAIN, home=home, env={"NETTX_PIN": PIN})
    ok(run)
    assert "SEND" not in run.stderr and "RECV" not in run.stderr  # not on stderr as well
    first = log.read_text().splitlines()
    assert any("SEND 00 20 00 81 Lc=8 <8 bytes redacted>" in line for line in first)
    assert log.stat().st_mode & 0o777 == 0o600
    assert_no_secret(log.read_bytes())
    assert PLAIN.encode()[:8].hex(" ").upper() not in log.read_text()

    ok(nettx("--trace-file", log, "card", "apdu", "--state", card, SELECT, "00 CA 00 C2 00",
             home=home))
    lines = log.read_text().splitlines()
    assert lines[:len(first)] == first and "SEND 00 A4 04 00" in lines[len(first)]
    assert "SEND 00 CA 00 C2 Le=256" in log.read_text()


def test_a_trace_file_is_never_written_through_a_symbolic_link(card: Path, home: Path,
                                                               tmp_path: Path) -> None:
    """The attack: another link planted where the trace goes (a shared directory) would have
    the trace append to, or make readable, a file of the attacker's choosing."""
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / "apdu.log"
    link.symlink_to(target)

    run = nettx("--trace-file", link, "card", "info", "--state", card, home=home)

    assert run.returncode == 1 and run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"error: --trace-file {link}: a symbolic link")
    assert target.read_text() == "keep me\n"


def test_an_existing_trace_file_others_can_read_is_tightened(card: Path, home: Path,
                                                             tmp_path: Path) -> None:
    log = tmp_path / "apdu.log"
    log.write_text("earlier\n")
    log.chmod(0o644)
    ok(nettx("--trace-file", log, "card", "info", "--state", card, home=home))
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.read_text().startswith("earlier\n")


def test_trace_full_shows_all_of_the_data(card: Path, home: Path) -> None:
    elided = nettx("--trace", "card", "apdu", "--state", card, SELECT, home=home)
    whole = nettx("--trace-full", "card", "apdu", "--state", card, SELECT, home=home)

    fci = bytes.fromhex("".join(ok(whole).split()[:-2]))  # "6F .. 9000  success"
    assert len(fci) > 64
    assert f"... ({len(fci)} bytes)" in elided.stderr
    assert f"RECV {fci.hex(' ').upper()} SW=9000" in whole.stderr


# -- the card's own trace ---------------------------------------------------------------------


def drive(reader: EmbeddedReader | SerialReader) -> None:
    """A holder's session: SELECT, VERIFY, MSE, ENCIPHER of PLAIN."""
    reader.power_on()
    session = CardSession(reader)
    session.select()
    session.verify_pin(PIN)
    session.set_peer(SELLER)
    session.encrypt(PLAIN.encode())


def test_card_serve_traces_what_the_card_receives_and_answers(card: Path, home: Path,
                                                             tmp_path: Path) -> None:
    capture = tmp_path / "card.pcap"
    reader = EmbeddedReader("127.0.0.1", 0)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NETTX_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "host.cli", "card", "serve", "--trace", "--trace-pcap", capture,
         "--state", card, "--vpcd", f"127.0.0.1:{reader.port}"],
        cwd=REPO, env={**clean, "NETTX_HOME": str(home)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        reader.wait_for_card(timeout=CONNECT_TIMEOUT)
        drive(reader)
    finally:
        reader.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr

    lines = [line for line in stderr.splitlines() if "nettx.card.apdu" in line]
    assert any("RECV 00 A4 04 00 Lc=10" in line for line in lines)
    assert any("RECV 00 20 00 81 Lc=8 <8 bytes redacted>" in line for line in lines)
    assert any(line.endswith("SEND SW=9000 (success)") for line in lines)
    assert any("RECV 00 2A 86 80" in line and "redacted" in line for line in lines)
    assert "31 32" not in stderr and PLAIN.encode()[:8].hex(" ").upper() not in stderr
    assert PIN_BLOCK.hex(" ").upper() not in stderr

    rows = fields(capture, "gsm_sim.apdu.ins", "gsm_sim.apdu.sw")
    assert [r[0] for r in rows] == ["0xa4", "0x20", "0x22", "0x2a"]
    assert all(r[1] == "0x9000" for r in rows)
    assert "VERIFY" in summary(capture)[1]
    assert_no_secret(capture.read_bytes())


def test_the_card_process_traces_with_trace(card: Path, tmp_path: Path) -> None:
    log = tmp_path / "card.log"
    reader = EmbeddedReader("127.0.0.1", 0)
    try:
        process = CardProcess(card, "127.0.0.1", reader.port, extra=["--trace"], log_path=log)
        try:
            reader.wait_for_card(timeout=CONNECT_TIMEOUT)
            drive(reader)
        finally:
            process.stop()
    finally:
        reader.close()

    text = log.read_text()
    assert "RECV 00 20 00 81 Lc=8 <8 bytes redacted>" in text
    assert "RECV 00 A4 04 00 Lc=10 F0 45 50" in text
    assert PIN_BLOCK.hex(" ").upper() not in text
    assert PLAIN.encode()[:8].hex(" ").upper() not in text


def test_card_serve_takes_one_capture_and_refuses_a_bad_one_before_serving(
        home: Path, tmp_path: Path) -> None:
    state = tmp_path / "new.card.json"
    twice = nettx("--trace-pcap", tmp_path / "a.pcap", "card", "serve", "--state", state,
                  "--trace-pcap", tmp_path / "b.pcap", home=home)
    assert twice.returncode == 2 and "--trace-pcap given twice" in twice.stderr
    assert "Traceback" not in twice.stderr

    link = tmp_path / "card.pcap"
    link.symlink_to(tmp_path / "elsewhere.pcap")
    refused = nettx("card", "serve", "--state", state, "--trace-pcap", link, home=home)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: --trace-pcap {link}: a symbolic link (a trace is never written through one: "
        "give the file's own path)"]
    assert not (tmp_path / "elsewhere.pcap").exists() and not state.exists()


def test_the_card_on_a_serial_line_traces_too(card: Path, tmp_path: Path) -> None:
    log = tmp_path / "card.log"
    with socat_pair(tmp_path) as (card_tty, reader_tty), SerialCardProcess(
            card, card_tty, extra=["--trace"], log_path=log):
        reader = SerialReader(reader_tty)
        try:
            reader.wait_for_card(CONNECT_TIMEOUT)
            drive(reader)
        finally:
            reader.close()

    text = log.read_text()
    assert "RECV 00 20 00 81 Lc=8 <8 bytes redacted>" in text
    assert "RECV 00 2A 86 80" in text and PIN_BLOCK.hex(" ").upper() not in text
    assert PLAIN.encode()[:8].hex(" ").upper() not in text
