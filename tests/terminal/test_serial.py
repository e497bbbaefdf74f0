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
from card_applet.atr import (
    ATR,
    ATR_CRC,
    ATR_DUAL,
    ATR_T0,
    HISTORICAL_BYTES,
    Edc,
    build_atr,
    inverse_to_direct,
    xor,
)
from card_applet.atr import parse_atr as parse
from card_applet.line import POWER_OFF_REQUEST, RESET_REQUEST, LineTiming, Pps
from card_applet.serve import main as serve_main
from card_applet.serve import parse_delays
from card_applet.state import MemoryStore, manufacture
from card_applet.t0 import is_incoming
from card_applet.t1 import Block, RError
from card_applet.vocabulary import encode_pin
from terminal.cardproc import SerialCardProcess
from terminal.errors import (
    ApduError,
    LineProtocolError,
    NoCardError,
    ReaderError,
    RetryLimitError,
)
from terminal.faultline import FaultLine, Faults
from terminal.readers import open_reader
from terminal.serial import SerialReader, _SerialLink, check_atr, check_pps_answer
from terminal.session import CardSession
from tests.conftest import HOLDER, PIN, SELLER, Centre
from tests.serial_support import card_thread, scripted_card, socat_pair

GET_CHALLENGE = bytes.fromhex("0084000008")
# the card process's --protocol and the reader's protocol: T=1 as before, and T=0 picked by
# PPS from a card that offers both
PROTOCOLS = pytest.mark.parametrize("protocol", [1, 0], ids=["t1", "t0"])


def card_args(protocol: int) -> list[str]:
    return ["--protocol", "both"] if protocol == 0 else []


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


@PROTOCOLS
def test_4000_bytes_each_way(card_state: Path, centre: Centre, tmp_path: Path,
                             protocol: int) -> None:
    with socat_pair(tmp_path) as (card_tty, reader_tty), SerialCardProcess(
            card_state, card_tty, extra=card_args(protocol)):
        reader = SerialReader(reader_tty, protocol=protocol)
        try:
            reader.wait_for_card(15)
            session = CardSession(reader)
            session.select()
            session.verify_pin(PIN)
            session.set_peer(SELLER)
            message = bytes(range(250)) * 16
            sent, tpdus = reader.stats.blocks_sent, reader.t0_stats.tpdus
            sealed = session.encrypt(message)
            assert len(sealed) > 4000
            command_blocks = reader.stats.blocks_sent - sent
            response_blocks = reader.stats.blocks_received
            if protocol == 1:
                assert command_blocks > 4000 // 254  # chained (plus R-blocks for the answer)
            else:  # 255-byte chained commands, the answer by GET RESPONSE 256 bytes at a time
                assert reader.t0_stats.tpdus - tpdus > 4000 // 255 + 4000 // 256
            seller = centre.seller()
            seller.set_peer(HOLDER)
            assert seller.decrypt(sealed) == message
            reply = seller.encrypt(message)
            assert session.decrypt(reply) == message  # a 4,000-byte response, chained in
            if protocol == 1:
                assert reader.stats.blocks_received - response_blocks > 4000 // 254
                assert reader.stats.retransmissions == 0
            else:
                assert reader.t0_stats.timeouts == 0
        finally:
            reader.close()


@PROTOCOLS
def test_wtx_or_null_during_a_slow_command(card_state: Path, tmp_path: Path,
                                           protocol: int) -> None:
    """T=1: S(WTX) every BWT/2; T=0: a NULL (60) every WWT/2. Either way the reader's timer
    (BWT, WWT) never runs out while the command works."""
    slow = 4.0
    timer = LineTiming().bwt if protocol == 1 else LineTiming().wwt
    with socat_pair(tmp_path) as (card_tty, reader_tty), SerialCardProcess(
            card_state, card_tty, extra=["--delay", f"84:{slow}", *card_args(protocol)]):
        reader = SerialReader(reader_tty, protocol=protocol)
        try:
            reader.wait_for_card(15)
            CardSession(reader).select()
            started = time.monotonic()
            response = reader.transmit(GET_CHALLENGE)
            took = time.monotonic() - started
            assert len(response) == 10 and response[-2:] == b"\x90\x00"
            assert took >= slow > 2 * timer  # without WTX / NULL the reader had given up
            if protocol == 1:
                assert reader.stats.wtx >= int(slow / timer)
                assert reader.stats.timeouts == 0
            else:
                assert reader.t0_stats.nulls >= int(slow / timer)
                assert reader.t0_stats.timeouts == 0
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


def test_t0_fails_the_command_at_once_then_resets(line: FaultLine, blank_applet: Applet) -> None:
    """T=0 has no retransmission: a garbled command fails (here: the card waits for a header
    the corrupted bytes never complete, or answers something the reader can tell is wrong),
    and the next command starts with a reset, after WWT of quiet so the card has dropped
    whatever part of a TPDU it was holding."""
    with card_thread(blank_applet, line.card_path, atr=ATR_DUAL) as card:
        reader = SerialReader(line.reader_path, protocol=0)
        try:
            reader.wait_for_card(5)
            line.faults = Faults(corrupt=1.0)
            with pytest.raises(LineProtocolError):
                reader.transmit(GET_CHALLENGE)
            assert not reader.active
            line.faults = Faults()
            assert reader.transmit(GET_CHALLENGE)[-2:] == b"\x69\x85"
            assert card.protocol == 0 and card.resets == 2
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
    with pytest.raises(ReaderError, match="needs a device"):
        open_reader("serial:t0:")
    for spec, protocol in ((f"serial:t0:{line.reader_path}", 0),
                           (f"serial:t1:{line.reader_path}", 1)):
        reader = open_reader(spec)
        assert isinstance(reader, SerialReader) and reader.url == line.reader_path
        assert reader.protocol == protocol and reader.extended_length == (protocol == 1)
        reader.close()


def test_a_t0_reader_refuses_a_t1_only_card(line: FaultLine, blank_applet: Applet) -> None:
    with card_thread(blank_applet, line.card_path):
        reader = SerialReader(line.reader_path, protocol=0)
        try:
            with pytest.raises(LineProtocolError, match="does not offer T=0 \\(offers T=1\\)"):
                reader.wait_for_card(1)
        finally:
            reader.close()


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


@pytest.mark.parametrize("card_protocol, reader_spec", [
    ([], "serial:"), (["--protocol", "t0"], "serial:t0:"), (["--protocol", "both"], "serial:t1:"),
])
def test_cli_serves_on_a_serial_line_and_reads_through_it(
        card_state: Path, tmp_path: Path, card_protocol: list[str], reader_spec: str) -> None:
    with socat_pair(tmp_path) as (card_tty, reader_tty):
        card = subprocess.Popen([sys.executable, "-m", "host.cli", "card", "serve", "--home",
                                 str(tmp_path / "home"), "--state", str(card_state),
                                 "--serial", card_tty, *card_protocol],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                info = nettx("card", "info", "--reader", f"{reader_spec}{reader_tty}",
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


def test_a_t0_reader_checks_the_t0_bytes_not_the_t1_ones() -> None:
    dual_bad_t1 = build_atr(ifsc=0xFF, bwi_cwi=0xA5, protocols=(0, 1))
    check_atr(parse(dual_bad_t1), 0)  # T=0 does not use IFSC or BWI
    with pytest.raises(LineProtocolError, match="IFSC FF is reserved"):
        check_atr(parse(dual_bad_t1), 1)
    wi_zero = bytes.fromhex("3B 80 40 00")  # TD1: T=0, TC2 00
    with pytest.raises(LineProtocolError, match="TC2 00: WI 0 is reserved"):
        check_atr(parse(wi_zero), 0)


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


@pytest.mark.parametrize("option", [["--crc"], ["--delay", "2A:1"], ["--protocol", "t0"]])
def test_serial_options_without_serial_are_a_usage_error(
        option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        serve_main(["--state", str(tmp_path / "card.json"), *option])
    assert exc.value.code == 2
    assert "--crc, --delay and --protocol work only with --serial" in capsys.readouterr().err


def test_crc_with_a_t0_only_card_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        serve_main(["--state", str(tmp_path / "card.json"), "--serial", "/dev/null", "--crc",
                    "--protocol", "t0"])
    assert exc.value.code == 2
    assert "--crc names a T=1 epilogue" in capsys.readouterr().err


# -- T=0: the ATR, the PPS that picks it, and what a corrupted byte does ----------------------


def read_atr(port: serial.Serial, atr: bytes) -> None:
    for _ in range(50):  # the card thread may not be reading yet
        port.write(RESET_REQUEST)
        if port.read(len(atr)) == atr:
            return
    pytest.fail("no ATR")


def test_pps_picks_t0_or_t1_from_the_dual_card(line: FaultLine, blank_applet: Applet) -> None:
    with card_thread(blank_applet, line.card_path, atr=ATR_DUAL) as card, \
            raw_port(line.reader_path) as port:
        read_atr(port, ATR_DUAL)
        assert card.protocol == 0  # TD1 names T=0 first: the default without a PPS
        port.write(Pps(1).encode())
        assert port.read(3) == Pps(1).encode()
        assert card.protocol == 1
        port.write(SELECT_BLOCK)  # T=1 from here
        assert Block.decode(port.read(6)).inf[-2:] == b"\x90\x00"
        port.write(RESET_REQUEST)
        assert port.read(len(ATR_DUAL)) == ATR_DUAL
        port.write(Pps(0).encode())
        assert port.read(3) == Pps(0).encode()  # FF 00 FF: T=0 confirmed
        assert card.protocol == 0
        port.write(bytes.fromhex("00 A4 04 0C 0A"))  # a T=0 header: the card ACKs (A4)
        assert port.read(1) == b"\xa4"
        port.write(bytes.fromhex("F0 45 50 30 37 39 31 39 30 31"))
        assert port.read(2) == b"\x90\x00"


def test_the_t0_only_card_refuses_a_pps_for_t1(line: FaultLine, blank_applet: Applet) -> None:
    with card_thread(blank_applet, line.card_path, atr=ATR_T0), \
            raw_port(line.reader_path) as port:
        read_atr(port, ATR_T0)
        port.write(Pps(1).encode())  # T=1 is not offered: silence (9.3)
        port.timeout = 0.3
        assert port.read(3) == b""
    with card_thread(blank_applet, line.card_path, atr=ATR_T0):
        reader = SerialReader(line.reader_path)  # T=1
        try:
            with pytest.raises(LineProtocolError, match="does not offer T=1 \\(offers T=0\\)"):
                reader.wait_for_card(1)
        finally:
            reader.close()


@pytest.mark.parametrize("atr, pps", [(ATR_DUAL, True), (ATR_T0, True), (ATR_DUAL, False),
                                      (ATR_T0, False)],
                         ids=["dual-pps", "t0-pps", "dual-no-pps", "t0-no-pps"])
def test_a_t0_session_on_either_card(line: FaultLine, blank_applet: Applet, atr: bytes,
                                     pps: bool) -> None:
    with card_thread(blank_applet, line.card_path, atr=atr) as card:
        reader = SerialReader(line.reader_path, protocol=0, pps=pps)
        try:
            assert reader.wait_for_card(5) == atr
            assert reader.pps == (Pps(0) if pps else None)
            session = CardSession(reader)
            assert session.select().version == (1, 0)
            assert len(session.get_challenge(256)) == 256
            # SELECT (case 4: case 3, then GET RESPONSE) and GET CHALLENGE: three TPDUs run
            assert card.protocol == 0 and card.t0.executions == 3
        finally:
            reader.close()


def test_a_t1_reader_without_pps_refuses_a_card_whose_default_is_t0(
        line: FaultLine, blank_applet: Applet) -> None:
    with card_thread(blank_applet, line.card_path, atr=ATR_DUAL):
        reader = SerialReader(line.reader_path, pps=False)
        try:
            with pytest.raises(LineProtocolError, match="speaks T=0 without a PPS"):
                reader.wait_for_card(1)
        finally:
            reader.close()


@pytest.mark.parametrize("answer, message", [
    (b"\xff\x00\x00", "PPS for T=0 refused \\(FF 00 00: PPS check byte PCK wrong\\)"),
    (b"", "PPS for T=0 refused \\(no answer"),
    (Pps(1).encode(), "PPS answer FF 01 FE does not confirm T=0"),
])
def test_a_t0_pps_that_fails_resets_then_deactivates(line: FaultLine, answer: bytes,
                                                     message: str) -> None:
    with scripted_card(line.card_path, ATR_DUAL, answer) as heard:
        reader = SerialReader(line.reader_path, protocol=0, slack=0.01)
        try:
            with pytest.raises(LineProtocolError, match=message):
                reader.power_on()
            time.sleep(0.2)
            assert heard == ["reset", "pps"] * 3 + ["power off"]
            assert not reader.active
        finally:
            reader.close()


def test_a_card_silent_mid_tpdu_drops_it_after_wwt(line: FaultLine,
                                                   blank_applet: Applet) -> None:
    """A header whose P3 promised more data than comes (a corrupted P3, or a reader that went
    away): after WWT of quiet the card drops it, executes nothing, and reads the next header
    as a header."""
    with card_thread(blank_applet, line.card_path, atr=ATR_T0) as card, \
            raw_port(line.reader_path) as port:
        read_atr(port, ATR_T0)
        port.write(bytes.fromhex("00 A4 04 0C 1A"))  # 26 data bytes promised
        assert port.read(1) == b"\xa4"
        port.write(bytes.fromhex("F0 45 50 30 37 39 31 39 30 31"))  # 10 come
        time.sleep(LineTiming().wwt + 0.3)
        port.write(bytes.fromhex("00 A4 04 0C 0A"))
        assert port.read(1) == b"\xa4"
        port.write(bytes.fromhex("F0 45 50 30 37 39 31 39 30 31"))
        assert port.read(2) == b"\x90\x00"
        assert card.t0.executions == 1


class Recording:
    """The applet, recording every command it runs."""

    def __init__(self, applet: Applet) -> None:
        self.applet, self.commands = applet, []

    def process(self, command: bytes) -> bytes:
        self.commands.append(command)
        return self.applet.process(command)

    def reset(self) -> None:
        self.applet.reset()

    def power_off(self) -> None:
        self.applet.power_off()


def test_after_a_failed_t0_command_the_reset_waits_until_the_card_dropped_its_tpdu(
        line: FaultLine, blank_applet: Applet) -> None:
    """The card holds the part of a TPDU it got until WWT of quiet. A reset sent sooner would
    be read as that TPDU's data, and the card would run a command made of it. So after a
    failed command the reader stays quiet for WWT before it resets. (Here the card's table
    wrongly reads GET CHALLENGE as a command with data: it ACKs and waits for 8 bytes that
    never come; its timer has more slack than the reader's, as a slower clock would.)"""
    recording = Recording(blank_applet)
    # card WWT 1 s + 1.6 s: longer than the reader takes to fail and drain (1.05 + 0.86 s),
    # shorter than that plus its WWT of quiet (+ 1.05 s)
    with card_thread(recording, line.card_path, atr=ATR_T0, slack=1.6) as card:
        reader = SerialReader(line.reader_path, protocol=0)
        try:
            reader.wait_for_card(5)
            card.t0.incoming = lambda _cla, _ins: True
            with pytest.raises(LineProtocolError, match="0 of 8 data bytes, then nothing"):
                reader.transmit(GET_CHALLENGE)
            card.t0.incoming = is_incoming
            assert reader.transmit(GET_CHALLENGE) == b"\x69\x85"  # not selected
            assert recording.commands == [GET_CHALLENGE]  # nothing made of reset requests
            assert card.resets == 2
        finally:
            reader.close()


def test_ff_inside_a_t0_tpdu_is_data_not_a_reset(line: FaultLine, blank_applet: Applet) -> None:
    """The in-band reset FF 52 53 54 is recognised only between TPDUs: inside one (here as a
    VERIFY's PIN block) it is data, as CLA FF is invalid for a header (10.3.2)."""
    with card_thread(blank_applet, line.card_path, atr=ATR_T0) as card, \
            raw_port(line.reader_path) as port:
        read_atr(port, ATR_T0)
        port.write(bytes.fromhex("00 A4 04 0C 0A F0 45 50 30 37 39 31 39 30 31")[:5])
        port.read(1)
        port.write(bytes.fromhex("F0 45 50 30 37 39 31 39 30 31"))
        assert port.read(2) == b"\x90\x00"
        port.write(bytes.fromhex("00 20 00 81 08"))
        assert port.read(1) == b"\x20"
        port.write(RESET_REQUEST + bytes(4))
        assert port.read(2) == b"\x69\x85"  # VERIFY ran (a blank card refuses it), no ATR
        assert card.resets == 1


def test_t0_corrupted_bytes_what_the_reader_detects(card_state: Path, centre: Centre,
                                                    tmp_path: Path) -> None:
    """T=0 has no checksum (docs/serial.md, "T=0 and corrupted bytes"). Through 0.2% corrupted
    bytes each way, every ENCIPHER ends in one of three ways: (1) right (its box opens to
    the plaintext sent); (2) the reader detected the corruption: a procedure byte that is
    none of the allowed ones, a length that disagrees, or a timeout (WWT); (3) nothing on
    the line noticed: a status word for another command than the one sent, or a box that
    does not open or opens to other bytes. (3) is what T=1's EDC prevents; the box's MAC is
    what catches the corrupted ones at the application layer."""
    apdus = 150
    detections = ("is none of ACK", "the lengths disagree", "within the work waiting time",
                  "asks for data after")
    seller = centre.seller()
    seller.set_peer(HOLDER)
    with FaultLine(Faults(corrupt=0.002), seed=20261129) as noisy, SerialCardProcess(
            card_state, noisy.card_path, extra=["--protocol", "both"],
            log_path=tmp_path / "card.log"):
        reader = SerialReader(noisy.reader_path, protocol=0)
        try:
            noisy.enabled.clear()
            reader.wait_for_card(15)
            right, detected, unseen, kinds = 0, 0, 0, set()
            session = None
            for i in range(apdus):
                plaintext = i.to_bytes(4, "big") * 4
                try:
                    if session is None:  # after a failure the card was reset: start again
                        noisy.enabled.clear()
                        session = CardSession(reader)
                        session.select()
                        session.verify_pin(PIN)
                        session.set_peer(SELLER)
                        noisy.enabled.set()
                    box = session.encrypt(plaintext)
                except LineProtocolError as exc:
                    detected += 1
                    kinds.add(next(d for d in detections if d in str(exc)))  # no other kind
                    session = None
                    continue
                except ApduError:
                    unseen += 1  # the card refused what it received: not what was sent
                    continue
                try:
                    opened = seller.decrypt(box)
                except ApduError:
                    opened = None  # corrupted on the way back: the MAC refuses it
                if opened == plaintext:
                    right += 1
                else:
                    unseen += 1
            noisy.enabled.clear()
            print(f"T=0 at 0.2% corrupted bytes, {apdus} ENCIPHERs: {right} right, {detected} "
                  f"detected by the reader ({', '.join(sorted(kinds))}), {unseen} unseen")
            assert right + detected + unseen == apdus
            assert right > apdus // 2
            assert detected > 0 and unseen > 0
            assert noisy.counts["to card"].corrupted + noisy.counts["to reader"].corrupted > 10
            # the line is clean again: the card still answers right
            session = CardSession(reader)
            session.select()
            session.verify_pin(PIN)
            session.set_peer(SELLER)
            assert seller.decrypt(session.encrypt(b"clean")) == b"clean"
        finally:
            reader.close()
