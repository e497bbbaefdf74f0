"""The card process (python -m card_applet.serve) against its reader: reconnection with
backoff, whole-frame reads from a stream, control codes, and a clean exit on SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from card_applet.atr import ATR
from card_applet.state import read_state
from card_applet.sw import SW
from card_applet.vocabulary import AID
from terminal.cardproc import CardProcess
from terminal.embedded import EmbeddedReader
from terminal.errors import ConditionsNotSatisfiedError, SecurityStatusError
from terminal.session import CardSession
from tests.e2e.support import CONNECT_TIMEOUT, PIN, SELLER, card_on_embedded_reader

EXPECTED_ATR = bytes.fromhex("3B 8B 81 31 FE 45 80 73 00 00 C0 55 6E 65 74 74 78 95")
SELECT_FCI = bytes.fromhex("00 A4 04 00") + bytes((len(AID),)) + AID + b"\x00"
GET_ATR, POWER_ON = b"\x04", b"\x01"


# -- reconnection -----------------------------------------------------------------------------


def test_card_reconnects_to_a_reader_reopened_on_the_same_port(card_file: Path) -> None:
    first = EmbeddedReader("127.0.0.1", 0)
    port = first.port
    second: EmbeddedReader | None = None
    card = CardProcess(card_file, "127.0.0.1", port)
    try:
        first.wait_for_card(timeout=CONNECT_TIMEOUT)
        session = CardSession(first)
        serial = session.select().serial
        session.verify_pin(PIN)
        session.set_peer(SELLER)
        session.encrypt(b"before")  # RAM holds: selected, PIN verified, peer set

        first.close()
        time.sleep(1.0)  # long enough for a few failed connects: the card is backing off
        second = EmbeddedReader("127.0.0.1", port)
        started = time.monotonic()
        second.wait_for_card(timeout=CONNECT_TIMEOUT)
        assert time.monotonic() - started < 5.0  # backoff is capped at 2 s
        assert card.alive()

        session = CardSession(second)
        # the card lost power with its reader: no longer selected, so not even PSO's
        # PIN check is reached
        with pytest.raises(ConditionsNotSatisfiedError):
            session.encrypt(b"after")
        info = session.select()
        assert info.serial == serial
        session.set_peer(SELLER)
        with pytest.raises(SecurityStatusError) as err:
            session.encrypt(b"after")
        assert err.value.sw == SW.SECURITY_STATUS_NOT_SATISFIED  # 6982: PIN not verified
        assert session.pin_tries_left() == info.pin_max  # not verified, nothing spent
    finally:
        card.stop()
        first.close()
        if second is not None:
            second.close()


def test_card_waits_for_a_reader_that_is_not_there_yet(card_file: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # a free port, closed again before the card starts
    card = CardProcess(card_file, "127.0.0.1", port)
    reader: EmbeddedReader | None = None
    try:
        time.sleep(0.5)
        assert card.alive()  # no reader is no reason to exit
        reader = EmbeddedReader("127.0.0.1", port)
        reader.wait_for_card(timeout=CONNECT_TIMEOUT)
        assert reader.power_on() == EXPECTED_ATR
    finally:
        card.stop()
        if reader is not None:
            reader.close()


# -- the vpcd stream, from a raw socket acting as the reader ----------------------------------


@pytest.fixture
def raw_reader(card_file: Path) -> Iterator[socket.socket]:
    """A bare vpcd listener and the card process's connection to it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(CONNECT_TIMEOUT)
        card = CardProcess(card_file, "127.0.0.1", listener.getsockname()[1])
        try:
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(10)
                yield conn
        finally:
            card.stop()


def receive_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "card closed the connection"
            data += chunk
        return data

    return exactly(int.from_bytes(exactly(2), "big"))


def send_in_pieces(sock: socket.socket, frame: bytes, cuts: list[int]) -> None:
    """Send `frame` cut at the given offsets, pausing so each piece is its own segment."""
    for start, end in zip([0, *cuts], [*cuts, len(frame)], strict=True):
        sock.sendall(frame[start:end])
        time.sleep(0.05)


def framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(2, "big") + payload


def test_get_atr_control_code_answers_the_atr(raw_reader: socket.socket) -> None:
    raw_reader.sendall(framed(GET_ATR))
    assert receive_frame(raw_reader) == EXPECTED_ATR == ATR


def test_length_and_body_sent_separately_make_one_frame(raw_reader: socket.socket) -> None:
    raw_reader.sendall(framed(POWER_ON))  # no answer to power on
    send_in_pieces(raw_reader, framed(SELECT_FCI), [2])

    response = receive_frame(raw_reader)
    assert response[0] == 0x6F and response[-2:] == b"\x90\x00"


def test_a_frame_in_three_pieces_is_read_whole(raw_reader: socket.socket) -> None:
    frame = framed(SELECT_FCI)
    send_in_pieces(raw_reader, frame, [1, 7])  # half the length; then into the body

    response = receive_frame(raw_reader)
    assert response[0] == 0x6F and response[-2:] == b"\x90\x00"
    # and the stream stays in step: the next frame is answered on its own
    send_in_pieces(raw_reader, framed(GET_ATR), [1])
    assert receive_frame(raw_reader) == EXPECTED_ATR


def test_two_frames_in_one_send_get_two_answers(raw_reader: socket.socket) -> None:
    raw_reader.sendall(framed(GET_ATR) + framed(SELECT_FCI))
    assert receive_frame(raw_reader) == EXPECTED_ATR
    assert receive_frame(raw_reader)[-2:] == b"\x90\x00"


# -- stopping ---------------------------------------------------------------------------------


def test_sigterm_while_serving_exits_0(card_file: Path) -> None:
    with card_on_embedded_reader(card_file) as (reader, card):
        assert reader.power_on() == EXPECTED_ATR
        card.proc.send_signal(signal.SIGTERM)
        assert card.proc.wait(timeout=10) == 0


def test_sigterm_while_waiting_for_a_reader_exits_0(card_file: Path, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    log = tmp_path / "card.log"
    with CardProcess(card_file, "127.0.0.1", port, log_path=log) as card:
        # the card logs its serial once its signal handlers are in place; then it enters
        # its backoff loop
        serial = read_state(card_file).serial.hex()
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while serial not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert card.alive()
        card.proc.send_signal(signal.SIGTERM)
        assert card.proc.wait(timeout=10) == 0
