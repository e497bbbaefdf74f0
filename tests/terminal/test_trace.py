"""The APDU trace redacts secrets in both directions (issue: `--trace buy` logged the first
64 bytes of every ENCIPHER plaintext), and shows them only when asked."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from card_applet import blom
from card_applet.apdu import CommandApdu, ResponseApdu
from card_applet.apdu_trace import CardTrace, TracedCard
from card_applet.applet import Applet
from card_applet.state import FileStore
from host.centre.personalisation import personalise
from terminal import trace
from terminal.inprocess import InProcessReader
from terminal.session import CardSession
from tests.conftest import HOLDER, PIN, PUK, SELLER, Centre

PLAIN = b"4970101234567890 Alice Martin, 5 avenue Foch" * 3


@pytest.fixture
def traced(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(trace.TRAFFIC, logger="nettx.apdu")
    yield caplog
    trace.show_secrets(False)


def exchange(cmd: CommandApdu, *answers: bytes, reader: str = "r") -> None:
    trace.trace_command(reader, cmd)
    for data in answers:
        trace.trace_response(reader, ResponseApdu(data, 0x6100 if data != answers[-1]
                                                  else 0x9000))
        if data != answers[-1]:
            trace.trace_command(reader, CommandApdu(0x00, 0xC0, 0, 0, le=256))


def test_pso_is_redacted_both_ways_through_get_response(traced: pytest.LogCaptureFixture
                                                        ) -> None:
    exchange(CommandApdu(0x00, 0x2A, 0x86, 0x80, PLAIN, 256), b"\x01" * 20)  # ENCIPHER
    exchange(CommandApdu(0x10, 0x2A, 0x80, 0x86, b"\x02" * 16), b"")  # a chained block
    exchange(CommandApdu(0x00, 0x2A, 0x80, 0x86, b"\x03" * 16, 256), PLAIN[:60], PLAIN[60:])
    exchange(CommandApdu(0x00, 0x88, 0, 0, b"\x04" * 16, 256), b"\x05" * 32)  # INTERNAL AUTH.
    exchange(CommandApdu(0x80, 0x50, 0, 0, b"\x06" * 8, 256), b"\x07" * 28)  # INITIALIZE UPD.
    exchange(CommandApdu(0x00, 0xCA, 0, 0xC2, le=256), bytes.fromhex("0102030405060708"))

    text = traced.text
    assert PLAIN[:16].hex(" ").upper() not in text and PLAIN[60:76].hex(" ").upper() not in text
    for byte in ("01 01 01", "02 02 02", "03 03 03", "04 04 04", "05 05 05", "06 06 06",
                 "07 07 07"):
        assert byte not in text, byte
    assert "RECV <60 bytes redacted> SW=6100" in text
    assert "RECV <72 bytes redacted> SW=9000" in text  # the GET RESPONSE's part too
    assert "RECV 01 02 03 04 05 06 07 08 SW=9000" in text  # GET DATA: public, shown


def test_secrets_are_shown_whole_when_asked(traced: pytest.LogCaptureFixture) -> None:
    trace.show_secrets(True)
    exchange(CommandApdu(0x00, 0x2A, 0x86, 0x80, PLAIN, 256), PLAIN)
    assert traced.text.count(PLAIN.hex(" ").upper()) == 2  # not elided after 64 bytes
    assert "redacted" not in traced.text


def test_another_reader_does_not_inherit_the_secrecy(traced: pytest.LogCaptureFixture) -> None:
    trace.trace_command("a", CommandApdu(0x00, 0x20, 0, 0x81, b"1234\xff\xff\xff\xff"))
    exchange(CommandApdu(0x00, 0xCA, 0, 0xC2, le=256), b"\x0a\x0b", reader="b")
    assert "RECV 0A 0B SW=9000" in traced.text  # reader b's GET DATA, after a's VERIFY


def test_a_refused_command_between_does_not_unmask_the_rest_of_a_secret(
        traced: pytest.LogCaptureFixture) -> None:
    """The attack, as `card apdu` can send it: DECIPHER leaves its plaintext pending behind
    61xx, a command the card refuses at its class check keeps it pending, GET RESPONSE
    fetches it. The GET RESPONSE is as secret as the command that started the chain, not as
    the refused one."""
    trace.trace_command("x", CommandApdu(0x00, 0x2A, 0x80, 0x86, b"\x03" * 16, 16))
    trace.trace_response("x", ResponseApdu(PLAIN[:16], 0x6100 | len(PLAIN) - 16))
    trace.trace_command("x", CommandApdu(0xFF, 0x00, 0x00, 0x00))
    trace.trace_response("x", ResponseApdu(b"", 0x6E00))
    trace.trace_command("x", CommandApdu(0x00, 0xC0, 0x00, 0x00, le=256))
    trace.trace_response("x", ResponseApdu(PLAIN[16:], 0x9000))

    assert PLAIN[16:32].hex(" ").upper() not in traced.text
    assert f"RECV <{len(PLAIN) - 16} bytes redacted> SW=9000" in traced.text


def test_long_data_is_shown_whole_when_asked_and_secrets_stay_redacted(
        traced: pytest.LogCaptureFixture) -> None:
    fci = bytes(range(100))
    exchange(CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xf0" * 10, 256), fci, reader="s")
    trace.show_full(True)
    try:
        exchange(CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xf0" * 10, 256), fci, reader="f")
        exchange(CommandApdu(0x00, 0x2A, 0x86, 0x80, PLAIN, 256), b"\x01" * 80, reader="f")
    finally:
        trace.show_full(False)

    assert "s RECV " + fci[:64].hex(" ").upper() + " ... (100 bytes) SW=9000" in traced.text
    assert "f RECV " + fci.hex(" ").upper() + " SW=9000" in traced.text
    assert "f RECV <80 bytes redacted>" in traced.text
    assert PLAIN[:16].hex(" ").upper() not in traced.text


@dataclass
class Recorder:
    rows: list[tuple[CommandApdu, ResponseApdu, bool, bool]] = field(default_factory=list)
    fail: bool = False

    def write(self, cmd: CommandApdu, resp: ResponseApdu, *, hide_command: bool = False,
              hide_response: bool = False) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.rows.append((cmd, resp, hide_command, hide_response))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    sink = Recorder()
    trace.record(sink)
    yield sink
    trace.record(None)


def test_every_exchange_is_recorded_with_what_to_hide(recorder: Recorder) -> None:
    exchange(CommandApdu(0x00, 0x20, 0x00, 0x81, b"1234\xff\xff\xff\xff"), b"", reader="p")
    exchange(CommandApdu(0x00, 0x2A, 0x80, 0x86, b"\x03" * 16, 256), PLAIN[:60], PLAIN[60:],
             reader="p")
    exchange(CommandApdu(0x00, 0xCA, 0x00, 0xC2, le=256), b"\x0a", reader="p")

    assert [(c.ins, hc, hr) for c, _, hc, hr in recorder.rows] == [
        (0x20, True, True), (0x2A, True, True), (0xC0, False, True), (0xCA, False, False)]
    assert recorder.rows[2][1].data == PLAIN[60:]  # raw exchanges: the GET RESPONSE's part

    trace.show_secrets(True)
    exchange(CommandApdu(0x00, 0x20, 0x00, 0x81, b"1234\xff\xff\xff\xff"), b"", reader="p")
    assert recorder.rows[-1][2:] == (False, False)
    trace.show_secrets(False)


def test_a_recording_that_fails_stops_and_the_session_goes_on(
        recorder: Recorder, traced: pytest.LogCaptureFixture) -> None:
    recorder.fail = True
    exchange(CommandApdu(0x00, 0xCA, 0x00, 0xC2, le=256), b"\x0a", reader="q")
    exchange(CommandApdu(0x00, 0xCA, 0x00, 0xC2, le=256), b"\x0b", reader="q")
    assert trace.recording() is None
    assert "APDU recording stopped: [Errno 28] No space left on device" in traced.text
    assert "q RECV 0B SW=9000" in traced.text


def test_terminal_and_card_redact_the_same_exchanges(centre: Centre, tmp_path: Path,
                                                     recorder: Recorder) -> None:
    """One table, two sides: a whole personalisation and a sealing, traced by the terminal
    and by the card it talks to, hide exactly the same data."""
    path = tmp_path / "c.json"
    centre.authority.manufacture_card(path)
    card_side = Recorder()
    applet = Applet(FileStore(path))
    traced_card = TracedCard(applet, "card", CardTrace(sink=card_side))
    reader = InProcessReader(traced_card, name="both sides")  # type: ignore[arg-type]
    session = CardSession(reader)
    (row,) = centre.authority.rows_for([blom.x_of(HOLDER)])
    pairing = personalise(session, centre.authority.transport_master, HOLDER, row, PIN, PUK)
    session = CardSession(reader)
    session.authenticate_card(pairing)
    session.verify_pin(PIN)
    session.set_peer(SELLER)
    session.encrypt(PLAIN)

    def seen(rows: list[tuple[CommandApdu, ResponseApdu, bool, bool]]) -> list[tuple]:
        return [(c.to_bytes(), r.sw, hc, hr) for c, r, hc, hr in rows]

    assert seen(recorder.rows) == seen(card_side.rows)
    hidden = {c.ins for c, _, hc, _ in recorder.rows if hc}
    assert hidden == {0x50, 0xE2, 0xF0, 0x88, 0x20, 0x2A}


@pytest.mark.parametrize("seen_before", [False, True])
def test_a_trace_turned_on_inside_a_secret_chain_does_not_show_its_rest(
        caplog: pytest.LogCaptureFixture, seen_before: bool) -> None:
    """While nothing traces, exchanges cost the trace nothing, not even its secrecy
    bookkeeping; a trace switched on after DECIPHER left its plaintext behind 61xx must still
    redact what GET RESPONSE fetches, on a reader it followed before and on a new one."""
    reader = f"late-{seen_before}"
    caplog.set_level(trace.TRAFFIC, logger="nettx.apdu")
    if seen_before:
        exchange(CommandApdu(0x00, 0xCA, 0, 0xC2, le=256), b"\x0a", reader=reader)
    caplog.set_level(logging.WARNING, logger="nettx.apdu")  # nothing traces now
    trace.trace_command(reader, CommandApdu(0x00, 0x2A, 0x80, 0x86, b"\x03" * 16, 16))
    trace.trace_response(reader, ResponseApdu(PLAIN[:16], 0x6100 | len(PLAIN) - 16))
    caplog.set_level(trace.TRAFFIC, logger="nettx.apdu")
    trace.trace_command(reader, CommandApdu(0x00, 0xC0, 0x00, 0x00, le=256))
    trace.trace_response(reader, ResponseApdu(PLAIN[16:], 0x9000))
    exchange(CommandApdu(0x00, 0xCA, 0, 0xC2, le=256), b"\x0b\x0c", reader=reader)

    assert PLAIN[16:32].hex(" ").upper() not in caplog.text
    assert f"{reader} RECV <{len(PLAIN) - 16} bytes redacted> SW=9000" in caplog.text
    assert f"{reader} RECV 0B 0C SW=9000" in caplog.text  # the next public answer: shown
