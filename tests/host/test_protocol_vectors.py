"""docs/vectors/protocol-v1.json is reproduced exactly, and every box in it opens through the
receiving party's own applet (the software security module), as the servers open them."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import cbor2
import pytest

from host.parties.issuer import DECLINED, RECEIPT_BLOCK
from host.parties.softcard import software_card
from host.protocol import envelope, parts
from host.protocol.envelope import Header
from host.protocol.order import Party
from terminal.errors import ApduError
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
                                 bytes.fromhex(part["box_hex"]), plaintext,
                                 parts.reader(party, pv.the_form()))
    assert opened.digest.hex() == committed["order_digest_hex"]
    assert opened.atc == part["atc"]


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
    assert hkdf_sha256(pair, b"EP0791901/card/v1/seal", info).hex() == part["key_hex"]
    assert part["context_hex"] == (b"part/" + bytes.fromhex(committed["order_id_hex"])).hex()


def test_form_mac_verifies_on_the_holders_card_for_its_nonce_only(committed: dict) -> None:
    vec = committed["form_mac"]["mac"]
    holder = party_card(pv.HOLDER)
    holder.set_peer(pv.IDS[Party.SELLER])
    mac, body = bytes.fromhex(vec["mac_hex"]), bytes.fromhex(vec["body_hex"])
    assert holder.decrypt(mac, body, bytes.fromhex(vec["context_hex"])) == b""
    other_nonce = envelope.context("form", b"\x0f" * envelope.FORM_NONCE_SIZE)
    with pytest.raises(ApduError):
        holder.decrypt(mac, body, other_nonce)


def test_form_mac_follows_the_documented_layout(committed: dict) -> None:
    """SHA-256 and CBOR by hand (cbor2, hashlib), the key by the RFC 5869 above."""
    vec = committed["form_mac"]
    seller, nonce = pv.IDS[Party.SELLER], bytes.fromhex(vec["nonce_hex"])
    raw = bytes.fromhex(vec["form_cbor_hex"])
    assert raw.hex() == committed["form_cbor_hex"]
    assert cbor2.loads(bytes.fromhex(vec["request_cbor_hex"])) == {
        "type": "form-request", "holder": pv.HOLDER, "nonce": nonce}
    digest = hashlib.sha256(b"nettx/form/v1" + raw).digest()
    assert digest.hex() == vec["form_digest_hex"]
    vec = vec["mac"]
    assert cbor2.loads(bytes.fromhex(vec["body_hex"])) == [
        "nettx/form/v1", seller, pv.HOLDER, nonce, digest]
    assert vec["context_hex"] == (b"form/" + nonce).hex()

    def lv(value: bytes) -> bytes:
        return bytes((len(value),)) + value

    info = (lv(b"seal") + lv(seller.encode()) + lv(pv.HOLDER.encode())
            + lv(bytes.fromhex(vec["context_hex"])))
    pair = pv.pair_key(pv.blom_vectors(), pv.HOLDER, seller)
    assert hkdf_sha256(pair, b"EP0791901/card/v1/seal", info).hex() == vec["key_hex"]


def test_a_decline_receipt_opens_on_the_holders_card_with_the_precise_reason(
        committed: dict) -> None:
    vec = committed["decline"]
    assert cbor2.loads(bytes.fromhex(vec["mac"]["body_hex"]))[3] == DECLINED
    receipt = vec["receipt"]
    holder = party_card(pv.HOLDER)
    holder.set_peer(pv.IDS[Party.ISSUER])
    plaintext = holder.decrypt(bytes.fromhex(receipt["box_hex"]),
                               bytes.fromhex(receipt["aad_hex"]),
                               bytes.fromhex(receipt["context_hex"]))
    assert plaintext.hex() == receipt["plaintext_hex"]
    assert len(plaintext) % RECEIPT_BLOCK == 0
    content = cbor2.loads(plaintext)
    assert content["reason"] == "wrong expiry date" and content["code"] == "declined"
    assert content["digest"].hex() == committed["order_digest_hex"]


def every_box(committed: dict) -> list[tuple[str, dict]]:
    """Every MAC and box of the file with a sender and a receiver, by its path."""
    found = []

    def walk(value: object, path: str) -> None:
        if isinstance(value, dict):
            if "sender" in value and ("mac_hex" in value or "box_hex" in value):
                found.append((path, value))
            for key, item in value.items():
                walk(item, f"{path}/{key}")

    walk(committed, "")
    return found


def test_every_mac_and_receipt_opens_on_its_receivers_applet(committed: dict) -> None:
    boxes = every_box(committed)
    assert len(boxes) == 17  # 3 parts, 9 MACs (the form MAC among them), 5 receipts
    for path, vec in boxes:
        card = party_card(vec["receiver"])
        card.set_peer(vec["sender"])
        sealed = bytes.fromhex(vec.get("box_hex") or vec["mac_hex"])
        aad = bytes.fromhex(vec.get("aad_hex") or vec["body_hex"])
        opened = card.decrypt(sealed, aad, bytes.fromhex(vec["context_hex"]))
        assert opened.hex() == vec.get("plaintext_hex", ""), path


def test_a_session_handshake_on_the_parties_applets_gives_the_vectors_keys(
        committed: dict) -> None:
    """The two parties' applets (GENERAL AUTHENTICATE) make the proofs of the vectors, each
    checks the other's, and the frames of the vectors open in the channels they key."""
    from host.protocol.session import Channel, SessionKeys

    vec = committed["session"]
    ni, nr = bytes.fromhex(vec["initiator_nonce_hex"]), bytes.fromhex(vec["responder_nonce_hex"])
    initiator, responder = party_card(vec["initiator"]), party_card(vec["responder"])
    initiator.set_peer(vec["responder"])
    responder.set_peer(vec["initiator"])
    ack = responder.general_authenticate(False, ni, nr)
    assert ack.proof.hex() == vec["responder_proof_hex"] and ack.send_key is None
    done = initiator.general_authenticate(True, ni, nr, ack.proof)
    assert done.proof.hex() == vec["initiator_proof_hex"]
    opened = responder.general_authenticate(False, ni, nr, done.proof)
    assert done.send_key == opened.receive_key == bytes.fromhex(
        vec["frame_key_initiator_to_responder_hex"])
    assert done.receive_key == opened.send_key == bytes.fromhex(
        vec["frame_key_responder_to_initiator_hex"])
    assert done.send_key is not None and done.receive_key is not None
    assert opened.send_key is not None and opened.receive_key is not None
    ours = Channel(SessionKeys(done.send_key, done.receive_key), initiator=True)
    theirs = Channel(SessionKeys(opened.send_key, opened.receive_key), initiator=False)
    forward, back = vec["initiator_to_responder"], vec["responder_to_initiator"]
    assert theirs.open(bytes.fromhex(forward["frame_cbor_hex"])).hex() == forward["body_cbor_hex"]
    assert ours.open(bytes.fromhex(back["frame_cbor_hex"])).hex() == back["body_cbor_hex"]
    with pytest.raises(ApduError) as info:  # a proof made for the other role does not pass
        initiator.general_authenticate(True, ni, nr, done.proof)
    assert info.value.sw == 0x6300
