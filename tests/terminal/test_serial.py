"""The serial reader and the serial card over pty pairs: the card in a thread (MemoryStore)
or in its own process (`python -m card_applet.serve --serial`), on a socat pair or on the
seeded fault line (terminal.faultline)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from card_applet import keys
from card_applet.applet import Applet
from card_applet.atr import ATR, ATR_CRC, HISTORICAL_BYTES, Edc, build_atr, inverse_to_direct, xor
from card_applet.atr import parse_atr as parse
from card_applet.line import POWER_OFF_REQUEST, RESET_REQUEST, LineTiming, Pps
from card_applet.serve import main as serve_main
from card_applet.serve import parse_delays
from card_applet.state import MemoryStore, manufacture
from card_applet.t1 import Block, RError
from card_applet.vocabulary import encode_pin
from terminal.cardproc import SerialCardProcess
from terminal.errors import LineProtocolError, NoCardError, ReaderError, RetryLimitError
from terminal.faultline import FaultLine, Faults
from terminal.readers import open_reader
from terminal.serial import SerialReader, _SerialLink, check_atr, check_pps_answer
from terminal.session import CardSession
from tests.conftest import HOLDER, PIN, SELLER, Centre
from tests.serial_support import card_thread, scripted_card, socat_pair

GET_CHALLENGE = bytes.fromhex("0084000008")


@pytest.fixture
def line() -> Iterator[FaultLine]:
    with FaultLine() as clean:
        yield clean


@pytest.fixture
def blank_applet() -> Applet:
    return Applet(MemoryStore(manufacture(bytes(32))))


def raw_port(path: str) -> serial.Serial:
    return serial.Serial(path, timeout=1.0)


def test_reset_gives_the_atr_then_pps_and_ifs(line: FaultLine, blank_applet: Applet) -> None:
    with card_thread(blank_applet, line.card_path) as card:
        reader = SerialReader(line.reader_path)
        try:
            assert reader.wait_for_card(5) == ATR
            assert reader.pps == Pps(1)  # T=1 confirmed; no PPS1: the card has no TA1
            assert reader.t1 is not None and reader.t1.ifsd == 254
            assert card.engine.ifsd == 254
            assert reader.transmit(GET_CHALLENGE)[-2:] == b"\x69\x85"  # not selected yet
            assert card.resets == 1
        finally:
            reader.close()


def test_pps_on_the_wire(line: FaultLine, blank_applet: Applet) -> None:
    with card_thread(blank_applet, line.card_path), raw_port(line.reader_path) as port:
        for _ in range(50):  # the card thread may not be reading yet
            port.write(RESET_REQUEST)
            if port.read(len(ATR)) == ATR:
                break
        else:
            pytest.fail("no ATR")
        port.write(Pps(0).encode())  # T=0 is not offered: the card stays silent (9.3)
        port.timeout = 0.3
        assert port.read(4) == b""
        port.timeout = 1.0
        port.write(RESET_REQUEST)
        assert port.read(len(ATR)) == ATR
        port.write(Pps(1, 0x13).encode())  # Fi 372 Di 4: more than the card offers
        assert port.read(3) == Pps(1).encode()  # accepted without PPS1: Fd, Dd
        port.write(RESET_REQUEST)
        assert port.read(len(ATR)) == ATR
        port.write(Pps(1, 0x11).encode())
        assert port.read(4) == Pps(1, 0x11).encode()  # echoed: accepted
        # after a deactivation the card hears nothing but a reset
        port.write(POWER_OFF_REQUEST + Pps(1).encode())
        port.timeout = 0.3
        assert port.read(3) == b""


def test_ifs_negotiation_cuts_the_response(line: FaultLine, blank_applet: Applet) -> None:
    with card_thread(blank_applet, line.card_path) as card:
        reader = SerialReader(line.reader_path, ifsd=32)
        try:
            reader.wait_for_card(5)
            assert card.engine.ifsd == 32
            session = CardSession(reader)
            session.select()
            before = reader.stats.blocks_received
            challenge = session.get_challenge(200)
            assert len(challenge) == 200
            assert reader.stats.blocks_received - before == -(-202 // 32)
        finally:
            reader.close()


def test_4000_bytes_each_way(card_state: Path, centre: Centre, tmp_path: Path) -> None:
    with socat_pair(tmp_path) as (card_tty, reader_tty), SerialCardProcess(card_state,
                                                                           card_tty):
        reader = SerialReader(reader_tty)
        try:
            reader.wait_for_card(15)
            session = CardSession(reader)
            session.select()
            session.verify_pin(PIN)
            session.set_peer(SELLER)
            message = bytes(range(250)) * 16
            sent = reader.stats.blocks_sent
            sealed = session.encrypt(message)
            assert len(sealed) > 4000
            command_blocks = reader.stats.blocks_sent - sent
            response_blocks = reader.stats.blocks_received
            assert command_blocks > 4000 // 254  # chained out (plus R-blocks for the answer)
            seller = centre.seller()
            seller.set_peer(HOLDER)
            assert seller.decrypt(sealed) == message
            reply = seller.encrypt(message)
            assert session.decrypt(reply) == message  # a 4,000-byte response, chained in
            assert reader.stats.blocks_received - response_blocks > 4000 // 254
            assert reader.stats.retransmissions == 0
        finally:
            reader.close()


def test_wtx_during_a_slow_command(card_state: Path, tmp_path: Path) -> None:
    slow = 4.0
    bwt = LineTiming().bwt
    with socat_pair(tmp_path) as (card_tty, reader_tty), SerialCardProcess(
            card_state, card_tty, extra=["--delay", f"84:{slow}"]):
        reader = SerialReader(reader_tty)
        try:
            reader.wait_for_card(15)
            CardSession(reader).select()
            started = time.monotonic()
            response = reader.transmit(GET_CHALLENGE)
            took = time.monotonic() - started
            assert len(response) == 10 and response[-2:] == b"\x90\x00"
            assert took >= slow > 2 * bwt  # without WTX the reader would have given up
            assert reader.stats.wtx >= int(slow / bwt)
            assert reader.stats.timeouts == 0
        finally:
            reader.close()


def test_one_percent_corrupted_bytes_1000_apdus_each_executed_once(
        card_state: Path, tmp_path: Path) -> None:
    apdus = 1000
    # The card announces CRC (TC3): at 1% per byte, two corrupted bytes in one 45-byte block
    # cancel out in an LRC about 4 times in 10,000 blocks, and this run sends ~3,000, so with
    # LRC a corrupted command would sooner or later execute (seen: 6700 from a mangled Lc).
    with FaultLine(Faults(corrupt=0.01), seed=20261124) as noisy, SerialCardProcess(
            card_state, noisy.card_path, extra=["--crc"], log_path=tmp_path / "card.log"):
        # 1% is far noisier than a real line: a 45-byte block fails a third of the time.
        # Measured on this seed, ISO's three retransmissions give up on some APDUs (1 in
        # 1,000 even for SELECT's 19-byte blocks), so this reader is told to persist longer
        reader = SerialReader(noisy.reader_path, max_retries=10)
        try:
            assert reader.wait_for_card(15) == ATR_CRC
            assert reader.parsed is not None and reader.parsed.edc is Edc.CRC
            session = CardSession(reader)
            session.select()
            session.verify_pin(PIN)
            session.set_peer(SELLER)
            before = session.info().atc
            counters = []
            for i in range(apdus):
                box = session.encrypt(i.to_bytes(4, "big"))
                counters.append(keys.box_counter(box))  # the card's ATC, +1 per run
            # every ENCIPHER ran exactly once: no gap (lost) and no repeat (executed twice)
            assert counters == list(range(before + 1, before + apdus + 1))
            assert session.info().atc == before + apdus
            counts = noisy.counts
            assert counts["to card"].corrupted > 100 and counts["to reader"].corrupted > 100
            assert reader.stats.retransmissions > 100
        finally:
            reader.close()


def test_reader_gives_up_after_the_retry_limit(line: FaultLine, blank_applet: Applet) -> None:
    with card_thread(blank_applet, line.card_path):
        reader = SerialReader(line.reader_path)
        try:
            reader.wait_for_card(5)
            line.faults = Faults(corrupt=1.0)  # from now on every byte is wrong
            with pytest.raises(RetryLimitError, match=r"it needs a reset\. The command's "
                                                      r"outcome is unknown"):
                reader.transmit(GET_CHALLENGE)
            assert reader.stats.resynchs == 1
            line.faults = Faults()
            # the next command resets the card first, and works
            assert reader.transmit(GET_CHALLENGE)[-2:] == b"\x69\x85"
        finally:
            reader.close()


def test_no_card_on_the_line(line: FaultLine) -> None:
    reader = SerialReader(line.reader_path, slack=0.01)
    try:
        with pytest.raises(NoCardError, match="no ATR after 3 resets"):
            reader.power_on()
    finally:
        reader.close()


def test_reader_specs(line: FaultLine) -> None:
    for spec in (f"serial:{line.reader_path}", f"serial://{line.reader_path}"):
        reader = open_reader(spec)
        assert isinstance(reader, SerialReader) and reader.url == line.reader_path
        reader.close()
    with pytest.raises(ReaderError, match="cannot open serial line /nonexistent/tty"):
        open_reader("serial:/nonexistent/tty")
    with pytest.raises(ReaderError, match="needs a device"):
        open_reader("serial:")


def test_a_card_that_does_not_offer_t1_is_refused(line: FaultLine) -> None:
    with raw_port(line.card_path) as card_end:
        reader = SerialReader(line.reader_path)
        try:
            t0_only = bytes.fromhex("3B 98 13 40 0A A5 03 01 01 01 AD 13 11")  # Belgian eID
            card_end.timeout = 2

            def answer() -> None:
                if card_end.read(len(RESET_REQUEST)) == RESET_REQUEST:
                    card_end.write(t0_only)

            responder = threading.Thread(target=answer)
            responder.start()
            with pytest.raises(LineProtocolError, match="does not offer T=1 \\(offers T=0\\)"):
                reader.power_on()
            responder.join()
        finally:
            reader.close()


def nettx(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NETTX_HOME": str(home)})


def test_cli_serves_on_a_serial_line_and_reads_through_it(card_state: Path,
                                                           tmp_path: Path) -> None:
    with socat_pair(tmp_path) as (card_tty, reader_tty):
        card = subprocess.Popen([sys.executable, "-m", "host.cli", "card", "serve", "--home",
                                 str(tmp_path / "home"), "--state", str(card_state),
                                 "--serial", card_tty],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                info = nettx("card", "info", "--reader", f"serial:{reader_tty}",
                             home=tmp_path / "home")
                if info.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert info.returncode == 0, info.stderr
            assert HOLDER in info.stdout and "operational" in info.stdout
        finally:
            card.terminate()
            card.wait(10)
    missing = nettx("card", "info", "--reader", "serial:/nonexistent/tty", home=tmp_path)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.splitlines() == [
        "error: cannot open serial line /nonexistent/tty: [Errno 2] could not open port "
        "/nonexistent/tty: [Errno 2] No such file or directory: '/nonexistent/tty'"]


class RecordingApplet:
    """Slow inside `process`, where a reset must not land."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def process(self, command: bytes) -> bytes:
        self.events.append("start")
        time.sleep(1.0)
        self.events.append("end")
        return b"\x90\x00"

    def reset(self) -> None:
        self.events.append("reset")

    def power_off(self) -> None:
        self.events.append("power off")


def test_reset_waits_for_the_running_command(line: FaultLine) -> None:
    """The applet runs on a worker thread; a reset (or deactivation) that comes while it runs
    is applied after the command finishes, never under it: else a VERIFY finishing after
    the reset could set state the reset had just cleared."""
    applet = RecordingApplet()
    with card_thread(applet, line.card_path), raw_port(line.reader_path) as port:
        for _ in range(50):
            port.write(RESET_REQUEST)
            if port.read(len(ATR)) == ATR:
                break
        port.write(Block.i(0, bytes.fromhex("0020008108") + encode_pin(PIN)).encode())
        time.sleep(0.2)
        port.write(RESET_REQUEST)
        port.timeout = 3
        # an S(WTX request) may come first (the card is BWT/2 into the command); then the
        # ATR, once the command has finished, its answer going to no one
        assert port.read_until(ATR).endswith(ATR)
        port.write(POWER_OFF_REQUEST)
        time.sleep(0.2)
    assert applet.events == ["reset", "start", "end", "reset", "power off"]


# -- PPS answers (ISO/IEC 7816-3 9.3) ---------------------------------------------------------


@pytest.mark.parametrize("request_, answer", [
    (Pps(1), Pps(1)),
    (Pps(1, 0x13), Pps(1, 0x13)),  # PPS1 echoed
    (Pps(1, 0x13), Pps(1)),  # PPS1 left out: Fd/Dd
])
def test_pps_answers_that_succeed(request_: Pps, answer: Pps) -> None:
    assert check_pps_answer(request_, answer.encode()) == answer


@pytest.mark.parametrize("request_, raw, message", [
    (Pps(1), b"", "refused \\(no answer: malformed"),
    (Pps(1), bytes.fromhex("FF 01 FF"), "PCK wrong"),
    (Pps(1), Pps(0).encode(), "does not confirm T=1"),
    (Pps(1), Pps(1, 0x11).encode(), "PPS1 11 not requested"),
    (Pps(1, 0x13), Pps(1, 0x12).encode(), "PPS1 12 not the 13 requested"),
    (Pps(1), Pps(1, None, 0x01).encode(), "PPS2 01 not requested"),
    (Pps(1), Pps(1, None, None, 0x00).encode(), "PPS3 00 not requested"),
    (Pps(1), bytes.fromhex("FF 81 7E"), "PPS0 81: b8 is reserved"),
])
def test_pps_answers_that_fail(request_: Pps, raw: bytes, message: str) -> None:
    with pytest.raises(LineProtocolError, match=message):
        check_pps_answer(request_, raw)


def test_pps_decode_refuses_the_reserved_b8() -> None:
    with pytest.raises(ValueError, match="b8 is reserved"):
        Pps.decode(bytes.fromhex("FF 81 7E"))


def test_a_card_that_answers_a_bad_pps_is_reset_then_deactivated(line: FaultLine) -> None:
    with scripted_card(line.card_path, ATR, Pps(1, 0x11).encode()) as heard:
        reader = SerialReader(line.reader_path, slack=0.01)
        try:
            with pytest.raises(LineProtocolError) as exc:
                reader.power_on()
            assert str(exc.value) == (f"serial {line.reader_path}: PPS answer FF 11 11 FF: "
                                      "PPS1 11 not requested")
            time.sleep(0.2)
            assert heard == ["reset", "pps"] * 3 + ["power off"]
            assert reader.t1 is None
        finally:
            reader.close()


# -- ATRs the reader cannot use ---------------------------------------------------------------


def atr_with_ta1(ta1: int) -> bytes:
    body = bytes((0x90 | len(HISTORICAL_BYTES), ta1, 0x81, 0x31, 0xFE, 0x45)) + HISTORICAL_BYTES
    return b"\x3b" + body + bytes((xor(body),))


@pytest.mark.parametrize("atr, message", [
    (build_atr(ifsc=0xFF), "IFSC FF is reserved"),
    (build_atr(ifsc=0x00), "IFSC 00 is reserved"),
    (atr_with_ta1(0x70), "TA1 70 uses reserved Fi/Di values"),
    (build_atr(bwi_cwi=0xA5), "BWI 10 is reserved"),
    (b"\x3f" + ATR[1:], "inverse convention not supported"),
])
def test_atrs_with_reserved_values_are_refused(atr: bytes, message: str) -> None:
    with pytest.raises(LineProtocolError, match=message):
        check_atr(parse(atr))


def test_an_atr_with_ifsc_ff_is_a_reader_error_not_an_atr_error(line: FaultLine) -> None:
    # the PPS answer is right: what the old reader tripped on after it was atr.ifsc
    with scripted_card(line.card_path, build_atr(ifsc=0xFF), Pps(1).encode()) as heard:
        reader = SerialReader(line.reader_path, slack=0.01)
        try:
            with pytest.raises(LineProtocolError, match="IFSC FF is reserved"):
                reader.power_on()
            time.sleep(0.2)
            assert heard == ["reset", "power off"]  # refused at once: a reset cannot help
        finally:
            reader.close()


def test_an_inverse_convention_card_is_refused(line: FaultLine) -> None:
    # an inverse-convention card's ATR as a direct-convention UART reads it: TS is 03
    as_read = inverse_to_direct(b"\x3f" + ATR[1:])
    assert as_read[0] == 0x03
    with scripted_card(line.card_path, as_read, Pps(1).encode()) as heard:
        reader = SerialReader(line.reader_path, slack=0.01)
        try:
            with pytest.raises(LineProtocolError, match="inverse convention not supported"):
                reader.power_on()
            time.sleep(0.2)
            assert heard == ["reset", "power off"]
        finally:
            reader.close()


# -- one corrupted block, one answer ----------------------------------------------------------


class BufferPort:
    """Bytes already on the line: `read` returns what is there, b"" once it is quiet."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.timeout: float | None = None

    def read(self, size: int = 1) -> bytes:
        chunk = bytes(self.data[:size])
        del self.data[:size]
        return chunk


SELECT_BLOCK = Block.i(0, bytes.fromhex("00A4040C0AF0455030373931393031")).encode()


def shorter_len(raw: bytes, length: int = 2) -> bytes:
    return raw[:2] + bytes((length,)) + raw[3:]


@pytest.mark.parametrize("edc", list(Edc))
def test_reader_drains_the_tail_of_a_block_whose_len_was_corrupted(edc: Edc) -> None:
    block = Block.i(0, bytes(range(15))).encode(edc)
    port = BufferPort(shorter_len(block))
    link = _SerialLink(port, LineTiming(), edc)  # type: ignore[arg-type]
    assert link.receive(1.0) == shorter_len(block)[: 3 + 2 + (2 if edc is Edc.CRC else 1)]
    assert link.receive(1.0) is None  # not the block's tail, read as a second block
    good = Block.r(1).encode(edc)
    port.data += good + good
    assert (link.receive(1.0), link.receive(1.0)) == (good, good)  # good blocks are kept


def test_card_answers_a_block_whose_len_was_corrupted_once(line: FaultLine,
                                                           blank_applet: Applet) -> None:
    with card_thread(blank_applet, line.card_path), raw_port(line.reader_path) as port:
        for _ in range(50):
            port.write(RESET_REQUEST)
            if port.read(len(ATR)) == ATR:
                break
        port.write(shorter_len(SELECT_BLOCK))
        assert port.read(4) == Block.r(0, RError.EDC).encode()
        port.timeout = 0.5
        assert port.read(4) == b""  # and nothing more: one bad block, one R-block
        port.timeout = 1.0
        port.write(SELECT_BLOCK)  # the card is in step: the block sent again works
        assert Block.decode(port.read(6)).inf[-2:] == b"\x90\x00"


# -- the card process's test facilities -------------------------------------------------------


class FailingApplet:
    """Raises on INS 01: a bug in the applet (Applet.process catches its own; this does not)."""

    def process(self, command: bytes) -> bytes:
        if command[1] == 0x01:
            raise RuntimeError("applet bug")
        return b"\x90\x00"

    def reset(self) -> None:
        pass

    def power_off(self) -> None:
        pass


def test_an_exception_in_the_applet_thread_answers_6f00(line: FaultLine) -> None:
    # INS 02's delay is negative: time.sleep raises in the worker thread
    with card_thread(FailingApplet(), line.card_path,
                     command_delay=lambda apdu: -1.0 if apdu[1] == 0x02 else 0.0):
        reader = SerialReader(line.reader_path)
        try:
            reader.wait_for_card(5)
            assert reader.transmit(bytes.fromhex("00010000")) == b"\x6f\x00"
            assert reader.transmit(bytes.fromhex("00020000")) == b"\x6f\x00"
            assert reader.transmit(bytes.fromhex("00030000")) == b"\x90\x00"  # still alive
            assert reader.stats.resynchs == 0
        finally:
            reader.close()


@pytest.mark.parametrize("spec", ["2A:-1", "2A:nan", "2A:inf", "2A:-inf", "2A:601"])
def test_delays_must_be_finite_and_bounded(spec: str) -> None:
    with pytest.raises(ValueError, match=f"bad --delay '{spec}': SECONDS must be from 0 to 600"):
        parse_delays([spec])


def test_delays() -> None:
    assert parse_delays(["2A:3.5", "84:0"]) == {0x2A: 3.5, 0x84: 0.0}
    for spec in ("2A", "2A:x", "100:1"):
        with pytest.raises(ValueError, match="want INS:SECONDS"):
            parse_delays([spec])


@pytest.mark.parametrize("option", [["--crc"], ["--delay", "2A:1"]])
def test_serial_options_without_serial_are_a_usage_error(
        option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        serve_main(["--state", str(tmp_path / "card.json"), *option])
    assert exc.value.code == 2
    assert "--crc and --delay work only with --serial" in capsys.readouterr().err
