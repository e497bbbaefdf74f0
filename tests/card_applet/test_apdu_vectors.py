"""docs/vectors/apdu-v1.json: the applet reproduces it exactly (the same APDUs, the same
answers), and every key, cryptogram, C-MAC and box in it follows docs/apdu.md section 5 when
recomputed by hand (hmac, hashlib, pycryptodome; nothing from card_applet/)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import CMAC

from tests.card_applet import apdu_vectors


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(apdu_vectors.PATH.read_text())


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def cmac(key: bytes, data: bytes) -> bytes:
    return CMAC.new(key, data, ciphermod=AES).digest()


def lv(value: bytes) -> bytes:
    return bytes((len(value),)) + value


def test_the_applet_reproduces_the_file(committed: dict) -> None:
    assert apdu_vectors.compute() == committed


def test_personalisation_by_hand(committed: dict) -> None:
    """apdu.md 5.6: the C-MACs of 3.14 and 3.15 belong to the session of 3.13."""
    p = committed["personalisation"]
    serial, hc, cc = h(p["serial_hex"]), h(p["host_challenge_hex"]), h(p["card_challenge_hex"])
    tk = hkdf(h(p["master_transport_key_hex"]), b"EP0791901/transport/v1", b"card" + serial)
    assert p["card_transport_key_hex"] == tk.hex()
    session = hkdf(tk, b"EP0791901/perso/v1", b"session" + hc + cc)
    assert p["session_key_hex"] == session.hex()
    assert p["card_cryptogram_hex"] == cmac(session, b"card" + hc + cc).hex()
    initialize = p["apdus"][1]
    assert initialize["command_hex"] == ("80500000" + "08" + hc.hex() + "00")
    assert initialize["response_hex"] == serial.hex() + cc.hex() + p["card_cryptogram_hex"] \
        + "9000"
    assert [c["counter"] for c in p["commands"]] == [1, 2, 3, 4, 5, 6]
    for command, line in zip(p["commands"], p["apdus"][2:], strict=True):
        header, payload = h(command["header_hex"]), h(command["payload_hex"])
        mac = cmac(session, command["counter"].to_bytes(2, "big") + header + payload)
        assert command["cmac_hex"] == mac.hex()
        data = payload + mac
        assert line["command_hex"] == (header + bytes((len(data),)) + data).hex()
        assert line["response_hex"] == "9000"
    tags = [h(c["payload_hex"])[:2].hex() for c in p["commands"][:5]]
    assert tags == ["df10", "df11", "df12", "df13", "df14"]


def test_boxes_by_hand(committed: dict) -> None:
    """apdu.md 5.2 and 5.3; the box of 1.7 is holder -> seller, empty aad and context."""
    blom = json.loads(apdu_vectors.BLOM.read_text())
    for box in committed["boxes"]:
        (pair,) = [q for q in blom["pairs"] if {q["a"], q["b"]} == {box["sender"],
                                                                     box["receiver"]}]
        assert box["pair_key_hex"] == pair["pair_key_hex"]
        info = (lv(b"seal") + lv(box["sender"].encode()) + lv(box["receiver"].encode())
                + lv(h(box["context_hex"])))
        key = hkdf(h(box["pair_key_hex"]), b"EP0791901/card/v1/seal", info)
        head = b"\x01" + box["atc"].to_bytes(4, "big")
        cipher = AES.new(key, AES.MODE_GCM, nonce=h(box["nonce_hex"]))
        cipher.update(head + h(box["aad_hex"]))
        ciphertext, tag = cipher.encrypt_and_digest(h(box["plaintext_hex"]))
        assert box["box_hex"] == (head + h(box["nonce_hex"]) + ciphertext + tag).hex()
    chained = committed["response_chaining"]
    assert b"".join(h(line["response_hex"])[:-2] for line in chained[2:]).hex() \
        == committed["boxes"][1]["box_hex"]
    assert [line["response_hex"][-4:] for line in chained] == ["6104", "9000", "6116", "6106",
                                                               "9000"]


def test_the_cmacs_shown_in_the_document_are_the_sessions(committed: dict) -> None:
    """apdu.md 3.14 and 3.15 show the C-MACs of the session of 3.13, every one of them."""
    text = (apdu_vectors.PATH.parents[1] / "apdu.md").read_text()
    shown = text[text.index("### 3.13 INITIALIZE UPDATE"):text.index("### 3.16 ")]
    stream = "".join(t for t in shown.split()
                     if len(t) == 2 and all(c in "0123456789ABCDEF" for c in t)).lower()
    p = committed["personalisation"]
    assert p["card_challenge_hex"] in stream and p["card_cryptogram_hex"] in stream
    for command in p["commands"]:
        assert command["cmac_hex"] in stream, command["what"]
