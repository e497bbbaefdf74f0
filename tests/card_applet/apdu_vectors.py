"""The examples of docs/apdu.md as vectors: the personalisation session of sections 3.13 to
3.15 (its card challenge fixed, so its C-MACs are reproducible) and the response chaining
of section 1.7 (its nonce fixed), each with the APDUs the applet exchanged.

    python -m tests.card_applet.apdu_vectors

writes docs/vectors/apdu-v1.json. tests/card_applet/test_apdu_vectors.py checks the file
against this computation, recomputes every value by hand (hmac, pycryptodome) and replays the
APDUs through the applet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from card_applet import blom, keys
from card_applet.apdu import CommandApdu
from card_applet.applet import Applet
from card_applet.state import MemoryStore, manufacture
from card_applet.tlv import tlv
from card_applet.vocabulary import AID, encode_pin

PATH = Path(__file__).resolve().parents[2] / "docs" / "vectors" / "apdu-v1.json"
BLOM = PATH.parent / "blom-v1.json"

MASTER_TRANSPORT_KEY = bytes(range(0x40, 0x60))
SERIAL = bytes.fromhex("0011223344556677")
HOST_CHALLENGE = bytes(range(1, 9))
CARD_CHALLENGE = bytes.fromhex("4035A75389867784")  # the card's random draw, fixed here
HOLDER, SELLER = "holder:alice@example.org", "seller:shop.example"
CARD_AUTH_KEY = bytes(range(0x40, 0x60))
BOX_NONCES = (bytes(range(12)), bytes.fromhex("6C028F059E29894770668C34"))


def holder_row() -> list[int]:
    doc = json.loads(BLOM.read_text())
    (party,) = [p for p in doc["parties"] if p["id"] == HOLDER]
    return [int(h, 16) for h in party["row_hex"]]


def perso_commands() -> list[tuple[int, int, bytes, str]]:
    """(INS, P2, payload, what) in the order of section 3.14, then SET STATUS."""
    return [
        (0xE2, 0, tlv(0xDF10, HOLDER.encode()), "holder id"),
        (0xE2, 0, tlv(0xDF11, blom.row_to_bytes(holder_row())), "row, k = 4"),
        (0xE2, 0, tlv(0xDF12, encode_pin("1234")), "PIN 1234"),
        (0xE2, 0, tlv(0xDF13, encode_pin("12345678")), "PUK 12345678"),
        (0xE2, 0, tlv(0xDF14, CARD_AUTH_KEY), "card authentication key"),
        (0xF0, 5, b"", "SET STATUS 05"),
    ]


@contextmanager
def fixed_randomness() -> Iterator[None]:
    """The card challenge and the two PSO nonces the examples show, in the order drawn."""
    draws = iter([CARD_CHALLENGE, *BOX_NONCES])
    with mock.patch("card_applet.applet.secrets.token_bytes", lambda n: next(draws)), \
            mock.patch("card_applet.keys.secrets.token_bytes", lambda n: next(draws)):
        yield


class Transcript:
    def __init__(self) -> None:
        self.card = Applet(MemoryStore(manufacture(
            keys.diversify_transport_key(MASTER_TRANSPORT_KEY, SERIAL), SERIAL)))
        self.card.power_on()
        self.lines: list[dict[str, str]] = []

    def raw(self, command: bytes) -> bytes:
        response = self.card.process(command)
        self.lines.append({"command_hex": command.hex(), "response_hex": response.hex()})
        return response

    def send(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
             le: int | None = None) -> bytes:
        return self.raw(CommandApdu(cla, ins, p1, p2, data, le).to_bytes())


def compute() -> dict[str, Any]:
    t = Transcript()
    card_tk = keys.diversify_transport_key(MASTER_TRANSPORT_KEY, SERIAL)
    session = keys.perso_session_key(card_tk, HOST_CHALLENGE, CARD_CHALLENGE)
    with fixed_randomness():
        t.send(0x00, 0xA4, 0x04, 0x00, AID, 256)
        answer = t.send(0x80, 0x50, 0x00, 0x00, HOST_CHALLENGE, 256)
        assert answer[8:16] == CARD_CHALLENGE and answer[-2:] == b"\x90\x00"
        commands = []
        for n, (ins, p2, payload, what) in enumerate(perso_commands(), start=1):
            header = bytes((0x80, ins, 0x00, p2))
            cmac = keys.command_mac(session, n, header, payload)
            assert t.send(0x80, ins, 0x00, p2, payload + cmac) == b"\x90\x00"
            commands.append({"counter": n, "what": what, "header_hex": header.hex(),
                             "payload_hex": payload.hex(), "cmac_hex": cmac.hex(),
                             "apdu_hex": t.lines[-1]["command_hex"]})
        perso_lines = t.lines
        t.lines = []
        assert t.send(0x00, 0x20, 0x00, 0x81, encode_pin("1234")) == b"\x90\x00"
        assert t.send(0x00, 0x22, 0x41, 0xA4, tlv(0x83, SELLER.encode())) == b"\x90\x00"
        first = t.send(0x00, 0x2A, 0x86, 0x80, tlv(0x80, b"hello") + tlv(0x81, b"hdr")
                       + tlv(0x82, b"order-1"), 256)
        t.lines = []
        t.send(0x00, 0xCA, 0x00, 0xC6)  # case 1: the ATC comes back through 61xx
        t.send(0x00, 0xC0, 0x00, 0x00, le=256)
        t.send(0x00, 0x2A, 0x86, 0x80, tlv(0x80, b"hello"), 16)
        t.send(0x00, 0xC0, 0x00, 0x00, le=16)
        t.send(0x00, 0xC0, 0x00, 0x00, le=256)
    chained = t.lines
    second = b"".join(bytes.fromhex(line["response_hex"])[:-2] for line in chained[2:])
    pair = t.card.v.peer.pair_key
    return {
        "about": "nettx card examples (docs/apdu.md 1.7, 3.13-3.15, 6.3, 9) as vectors",
        "personalisation": {
            "master_transport_key_hex": MASTER_TRANSPORT_KEY.hex(),
            "serial_hex": SERIAL.hex(), "card_transport_key_hex": card_tk.hex(),
            "host_challenge_hex": HOST_CHALLENGE.hex(),
            "card_challenge_hex": CARD_CHALLENGE.hex(), "session_key_hex": session.hex(),
            "card_cryptogram_hex": keys.card_cryptogram(session, HOST_CHALLENGE,
                                                        CARD_CHALLENGE).hex(),
            "commands": commands, "apdus": perso_lines,
        },
        "boxes": [
            {"section": "9", "sender": HOLDER, "receiver": SELLER,
             "pair_key_hex": pair.hex(), "context_hex": b"order-1".hex(),
             "aad_hex": b"hdr".hex(), "atc": 1, "nonce_hex": BOX_NONCES[0].hex(),
             "plaintext_hex": b"hello".hex(), "box_hex": first[:-2].hex()},
            {"section": "1.7", "sender": HOLDER, "receiver": SELLER,
             "pair_key_hex": pair.hex(), "context_hex": "", "aad_hex": "", "atc": 2,
             "nonce_hex": BOX_NONCES[1].hex(), "plaintext_hex": b"hello".hex(),
             "box_hex": second.hex()},
        ],
        "response_chaining": chained,
    }


if __name__ == "__main__":
    PATH.write_text(json.dumps(compute(), indent=1) + "\n")
    print(f"wrote {PATH}")
