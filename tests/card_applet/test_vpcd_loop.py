"""The vpcd card side in-process: FrameBuffer on every way a stream can cut frames, and
VpcdCard's blocking loop, which must still end when `stop` is set while it waits in recv."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from card_applet.vpcd import MAX_FRAME, CardSide, FrameBuffer, VpcdCard, encode_frame

SELECT = bytes.fromhex("00A4040005F045503037")
GET_DATA = bytes.fromhex("00CA00C200")


def test_one_whole_frame_per_read() -> None:
    frames = FrameBuffer()
    assert frames.feed(encode_frame(GET_DATA)) == [GET_DATA]
    assert frames.pending == 0


def test_length_then_body() -> None:
    frames = FrameBuffer()
    wire = encode_frame(SELECT)
    assert frames.feed(wire[:2]) == []
    assert frames.feed(wire[2:]) == [SELECT]
    assert frames.pending == 0


@pytest.mark.parametrize("cuts", [[1], [1, 2], [3], [2, 5], [1, 4, 9], list(range(1, 12))])
def test_any_cut_gives_the_same_frames(cuts: list[int]) -> None:
    wire = encode_frame(SELECT) + encode_frame(b"\x04") + encode_frame(GET_DATA)
    frames, got = FrameBuffer(), []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += frames.feed(wire[start:end])
    assert got == [SELECT, b"\x04", GET_DATA]
    assert frames.pending == 0


def test_several_frames_and_a_partial_one_in_one_read() -> None:
    frames = FrameBuffer()
    wire = encode_frame(b"\x01") + encode_frame(b"\x04") + encode_frame(SELECT)
    assert frames.feed(wire[:-3]) == [b"\x01", b"\x04"]
    assert frames.pending == 2 + len(SELECT) - 3
    assert frames.feed(wire[-3:]) == [SELECT]


def test_a_read_longer_than_its_length_says_is_not_one_frame() -> None:
    """The one-frame shortcut must not swallow the start of the next frame."""
    frames = FrameBuffer()
    wire = encode_frame(GET_DATA) + encode_frame(SELECT)[:3]
    assert frames.feed(wire) == [GET_DATA]
    assert frames.pending == 3


def test_body_after_its_length_but_longer_is_split() -> None:
    frames = FrameBuffer()
    assert frames.feed(encode_frame(GET_DATA)[:2]) == []
    assert frames.feed(GET_DATA + encode_frame(b"\x04")) == [GET_DATA, b"\x04"]
    assert frames.pending == 0


def test_empty_frame_and_largest_frame() -> None:
    frames = FrameBuffer()
    big = bytes(range(256)) * 255 + bytes(MAX_FRAME - 256 * 255)
    assert frames.feed(encode_frame(b"")) == [b""]
    assert frames.feed(encode_frame(big)) == [big]


def test_frames_are_bytes() -> None:
    """A frame is handed to the applet, which may keep it: never a view on a reused buffer."""
    frames = FrameBuffer()
    wire = encode_frame(SELECT)
    got = frames.feed(wire[:2]) + frames.feed(bytearray(wire[2:]))
    assert got == [SELECT] and type(got[0]) is bytes


class Echo:
    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.powered_off = 0

    def process(self, command: bytes) -> bytes:
        self.commands.append(command)
        return b"\x90\x00"

    def power_on(self) -> None: ...

    def power_off(self) -> None:
        self.powered_off += 1

    def reset(self) -> None: ...


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(10)
        yield sock


def serving(card: VpcdCard) -> threading.Thread:
    thread = threading.Thread(target=card.run, daemon=True)
    thread.start()
    return thread


def exchange(conn: socket.socket, payload: bytes) -> bytes:
    conn.sendall(encode_frame(payload))
    data = b""
    while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
        chunk = conn.recv(65536)
        assert chunk, "the card closed the connection"
        data += chunk
    return data[2:]


@pytest.mark.parametrize("private", [False, True], ids=["tcp", "private-channel"])
def test_stop_ends_a_loop_blocked_in_recv(listener: socket.socket, private: bool) -> None:
    echo = Echo()
    if private:
        conn, theirs = socket.socketpair()
        card = VpcdCard(CardSide(echo), channel=theirs)
    else:
        card = VpcdCard(CardSide(echo), "127.0.0.1", listener.getsockname()[1])
    thread = serving(card)
    if not private:
        conn, _ = listener.accept()
    with conn:
        conn.settimeout(10)
        assert exchange(conn, GET_DATA) == b"\x90\x00"
        time.sleep(0.2)  # the card is back in its recv, which no timeout interrupts
        started = time.monotonic()
        card.stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert time.monotonic() - started < 2.0
        assert conn.recv(1) == b""  # the card's end is closed: the reader sees it leave
    assert echo.commands == [GET_DATA]


def test_stop_set_before_run_serves_nothing(listener: socket.socket) -> None:
    conn, theirs = socket.socketpair()
    card = VpcdCard(CardSide(Echo()), channel=theirs)
    card.stop.set()
    thread = serving(card)
    thread.join(timeout=5)
    assert not thread.is_alive()
    with conn:
        assert conn.recv(1) == b""


def test_reader_closing_powers_the_card_off_and_it_reconnects(listener: socket.socket) -> None:
    echo = Echo()
    card = VpcdCard(CardSide(echo), "127.0.0.1", listener.getsockname()[1], backoff_max=0.2)
    thread = serving(card)
    try:
        first, _ = listener.accept()
        with first:
            assert exchange(first, GET_DATA) == b"\x90\x00"
        second, _ = listener.accept()  # the card came back after the reader went away
        with second:
            assert exchange(second, SELECT) == b"\x90\x00"
        assert echo.powered_off >= 1
        assert echo.commands == [GET_DATA, SELECT]
    finally:
        card.stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
