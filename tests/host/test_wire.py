"""Frames and messages: the sans-IO decoder, and a live seller fed hostile bytes. Every bad
input gets an `error` message naming what was wrong, and the server keeps serving."""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from card_applet import blom
from card_applet.applet import Applet
from card_applet.state import FileStore
from host.centre.authority import Authority
from host.centre.personalisation import personalise
from host.errors import WireError
from host.parties.connection import Connection
from host.parties.holder import HolderClient
from host.protocol import codec
from host.protocol.wire import MAX_FRAME, FrameDecoder, MessageType, RawMessage, frame
from host.storage.ledger import Ledger
from terminal.inprocess import InProcessReader
from terminal.session import CardSession
from tests.host.market import CARD_NUMBER, HOLDER, SELLER, Market, issue_market_rows, order

PIN, PUK = "1234", "12345678"


def test_decoder_reassembles_split_frames() -> None:
    data = frame(MessageType.FORM_REQUEST) + frame(MessageType.STATUS, order=b"\x01" * 16)
    decoder = FrameDecoder()
    frames = [f for byte in data for f in decoder.feed(bytes([byte]))]
    assert [RawMessage.parse(f).type for f in frames] == [MessageType.FORM_REQUEST,
                                                      MessageType.STATUS]
    assert not decoder.mid_frame


def test_decoder_refuses_oversized_length_before_buffering() -> None:
    with pytest.raises(WireError, match="exceeds the maximum") as info:
        FrameDecoder().feed(struct.pack(">I", MAX_FRAME + 1))
    assert info.value.code == "too-large"


@pytest.mark.parametrize(("payload", "match"), [
    (b"\xff\xff", "not valid CBOR"),
    (codec.encode([1, 2]), "must be a map"),
    (codec.encode({"no": "type"}), "missing field 'type'"),
    (codec.encode({"type": 7}), "must be str"),
    (codec.encode({"type": "launch-missiles"}), "unknown message type"),
])
def test_bad_messages(payload: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        RawMessage.parse(payload)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_wire_error(data: bytes) -> None:
    try:
        message = RawMessage.parse(data)
    except WireError as exc:
        assert exc.code in ("malformed", "unknown-type")
    else:
        assert isinstance(message.type, MessageType)


# -- a live seller ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    authority = Authority(tmp_path_factory.mktemp("centre"))
    authority.init(k=8)
    m = Market(authority, issue_market_rows(authority), tmp_path_factory.mktemp("market"))
    m.start()
    yield m
    m.stop()


def exchange(port: int, data: bytes, *, close_write: bool = True) -> list[dict]:
    """Send raw bytes, read every frame until the server closes (or 5 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        decoder, replies = FrameDecoder(), []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            replies += [cbor2.loads(f) for f in decoder.feed(chunk)]
    return replies


def still_serving(port: int) -> bool:
    replies = exchange(port, frame(MessageType.FORM_REQUEST, holder=HOLDER, nonce=bytes(16)))
    return [r["type"] for r in replies] == ["form"]


def raw_frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


HOSTILE: list[tuple[str, Callable[[], bytes], str]] = [
    ("truncated", lambda: raw_frame(codec.encode({"type": "form-request"}))[:-2], "truncated"),
    ("oversized", lambda: struct.pack(">I", 2**31) + b"x" * 100, "too-large"),
    ("not cbor", lambda: raw_frame(b"\xff\x00\x13"), "malformed"),
    ("not a map", lambda: raw_frame(codec.encode(["order"])), "malformed"),
    ("unknown type", lambda: raw_frame(codec.encode({"type": "refund"})), "unknown-type"),
    ("wrong direction", lambda: frame(MessageType.AUTHORISE, header=b"", part=b"", mac=b""),
     "unexpected"),
    ("envelope of wrong type", lambda: frame(MessageType.ORDER, envelope="hello"), "malformed"),
    ("parts of wrong type", lambda: frame(MessageType.ORDER,
                                          envelope={"header": b"h", "parts": [1, 2, 3]}),
     "malformed"),
    ("header not cbor", lambda: frame(MessageType.ORDER, envelope={
        "header": b"\xff", "parts": {p: b"\x01" * 40 for p in ("seller", "issuer", "delivery")}}),
     "malformed"),
    ("confirm without challenge", lambda: frame(MessageType.CONFIRM, party="seller",
                                                peer="holder:x"), "malformed"),
    ("confirm for nobody", lambda: frame(MessageType.CONFIRM, party="bank", peer="holder:x",
                                         challenge=b"\x00" * 16), "wrong-party"),
    ("status of unknown order", lambda: frame(MessageType.STATUS, order=b"\x00" * 16),
     "unknown-order"),
]


@pytest.mark.parametrize(("name", "make", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_gets_a_clear_error(live: Market, name: str, make: Callable[[], bytes],
                                          code: str) -> None:
    port = live.ports["seller"]
    replies = exchange(port, make())
    assert replies, f"{name}: no answer"
    assert replies[-1]["type"] == "error"
    assert replies[-1]["code"] == code, replies[-1]
    assert replies[-1]["message"]
    assert still_serving(port)


def test_bit_flips_in_an_envelope_never_pass(live: Market, tmp_path: Path) -> None:
    """A fresh order for every flip (so none is merely a replay of the last), anywhere in the
    frame after its length: each ends in an error or a failed order, and no charge stands."""
    path = tmp_path / "card.json"
    live.authority.manufacture_card(path)
    (row,) = live.authority.rows_for([blom.x_of(HOLDER)])
    card = CardSession(InProcessReader(Applet(FileStore(path))))
    card.authenticate_card(personalise(card, live.authority.transport_master, HOLDER, row,
                                       PIN, PUK))
    client = HolderClient(card, PIN, "127.0.0.1", live.ports["seller"], seller=SELLER,
                          max_amount="1000.00")
    ledger = Ledger(live.home / "ledger.sqlite")
    account_before = ledger.account(CARD_NUMBER)
    rng = random.Random(4)
    codes: dict[str, int] = {}
    for _ in range(40):
        with Connection("127.0.0.1", live.ports["seller"]) as conn:
            _form, sealed = client.prepare(conn, order())
        flipped = bytearray(frame(MessageType.ORDER, envelope=sealed.envelope.to_cbor()))
        position = rng.randrange(4, len(flipped))
        flipped[position] ^= 1 << rng.randrange(8)
        replies = exchange(live.ports["seller"], bytes(flipped))
        assert replies, "no answer to a flipped envelope"
        last = replies[-1]
        assert last["type"] == "error" or last["status"] == "failed", last
        key = last.get("code") or last["reason"].split(":")[0]
        codes[key] = codes.get(key, 0) + 1
    assert still_serving(live.ports["seller"])
    assert ledger.account(CARD_NUMBER) == account_before, codes  # nothing charged, or reversed
    ledger.close()
    assert "replay" not in codes
    assert len(codes) >= 2, codes  # the flips reached more than one check
