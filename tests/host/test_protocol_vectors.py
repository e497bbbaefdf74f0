"""docs/vectors/protocol-v1.json is reproduced exactly, and every box in it opens through the
receiving party's own applet (the software security module), as the servers open them."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from host import envelope
from host.envelope import Header
from host.order import Party
from host.softcard import software_card
from terminal.session import CardSession
from tests.host import protocol_vectors as pv

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "vectors" / "protocol-v1.json"


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(VECTORS.read_text())


def party_card(identifier: str) -> CardSession:
    for party in pv.blom_vectors()["parties"]:
        if party["id"] == identifier:
            return software_card(identifier, [int(h, 16) for h in party["row_hex"]])
    raise KeyError(identifier)


def test_vectors_reproduce_exactly(committed: dict) -> None:
    assert pv.compute() == committed


@pytest.mark.parametrize("party", list(Party))
def test_each_part_opens_on_its_partys_applet(committed: dict, party: Party) -> None:
    part = committed["parts"][party.value]
    card = party_card(pv.IDS[party])
    card.set_peer(pv.HOLDER)
    plaintext = card.decrypt(bytes.fromhex(part["box_hex"]), bytes.fromhex(part["aad_hex"]),
                             bytes.fromhex(part["context_hex"]))
    assert plaintext.hex() == part["plaintext_hex"]
    header_bytes = bytes.fromhex(committed["header_hex"])
    opened = envelope.parse_part(Header.from_bytes(header_bytes), header_bytes, party,
                                 bytes.fromhex(part["box_hex"]), plaintext)
    assert opened.digest.hex() == committed["order_digest_hex"]
    assert opened.atc == int(part["atc"])


def test_authorisation_mac_verifies_on_the_sellers_applet(committed: dict) -> None:
    auth = committed["authorisation"]
    seller = party_card(pv.IDS[Party.SELLER])
    seller.set_peer(pv.IDS[Party.ISSUER])
    assert seller.decrypt(bytes.fromhex(auth["mac_hex"]), bytes.fromhex(auth["body_hex"]),
                          bytes.fromhex(auth["context_hex"])) == b""


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 from the standard library: a second implementation to check ours against."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def test_vectors_follow_the_documented_formulas(committed: dict) -> None:
    """Recompute from docs/protocol.md's formulas with hashlib alone, not with host/."""
    header = bytes.fromhex(committed["header_hex"])
    commitments = {}
    for party in ("seller", "issuer", "delivery"):
        salt = bytes.fromhex(committed["salts_hex"][party])
        fields = bytes.fromhex(committed["fields_cbor_hex"][party])
        commitments[party] = hashlib.sha256(b"nettx/commit/v1" + salt + fields).digest()
        assert commitments[party].hex() == committed["commitments_hex"][party]
    digest = hashlib.sha256(b"nettx/order/v1" + header + commitments["seller"]
                            + commitments["issuer"] + commitments["delivery"]).digest()
    assert digest.hex() == committed["order_digest_hex"]

    def lv(value: bytes) -> bytes:
        return bytes((len(value),)) + value

    pair = pv.pair_key(pv.blom_vectors(), pv.HOLDER, pv.IDS[Party.DELIVERY])
    part = committed["parts"]["delivery"]
    info = (lv(b"seal") + lv(pv.HOLDER.encode()) + lv(pv.IDS[Party.DELIVERY].encode())
            + lv(bytes.fromhex(part["context_hex"])))
    assert hkdf_sha256(pair, b"EP0791901/card/v1/seal", info).hex() == part["seal_key_hex"]
    assert part["context_hex"] == (b"part/" + bytes.fromhex(committed["order_id_hex"])).hex()
