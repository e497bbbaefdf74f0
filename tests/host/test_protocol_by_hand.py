"""Every value of docs/vectors/protocol-v1.json recomputed from docs/protocol.md's formulas
with hashlib, hmac, cbor2 and pycryptodome only: nothing from host/, terminal/ or card_applet/
is imported, so the documents and the code cannot drift apart unnoticed.

Pair keys come from docs/vectors/blom-v1.json (their own derivation is checked by hand in
tests/card_applet/test_blom_vectors.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from Crypto.Cipher import AES

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "vectors"
ROLES = ("seller", "issuer", "delivery")  # the order of the commitments in the order digest


@pytest.fixture(scope="module")
def v() -> dict[str, Any]:
    return json.loads((VECTORS / "protocol-v1.json").read_text())


@pytest.fixture(scope="module")
def blom() -> dict[str, Any]:
    return json.loads((VECTORS / "blom-v1.json").read_text())


def cbor(value: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 4.2.1), protocol.md section 2."""
    return cbor2.dumps(value, canonical=True)


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def lv(value: bytes) -> bytes:
    return bytes((len(value),)) + value


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869, SHA-256, 32 bytes (one block)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def pair_key(blom: dict[str, Any], a: str, b: str) -> bytes:
    (pair,) = [p for p in blom["pairs"] if {p["a"], p["b"]} == {a, b}]
    return h(pair["pair_key_hex"])


def seal_key(blom: dict[str, Any], sender: str, receiver: str, context: bytes) -> bytes:
    info = lv(b"seal") + lv(sender.encode()) + lv(receiver.encode()) + lv(context)
    return hkdf(pair_key(blom, sender, receiver), b"EP0791901/card/v1/seal", info)


def box(key: bytes, atc: int, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """apdu.md 5.3: 01 || ATC(4, BE) || nonce(12) || ciphertext || tag(16), GCM AAD =
    01 || ATC || aad."""
    head = b"\x01" + atc.to_bytes(4, "big")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(head + aad)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return head + nonce + ciphertext + tag


def check_box(blom: dict[str, Any], vec: dict[str, Any], sender: str, receiver: str,
              context: bytes, aad: bytes, plaintext: bytes = b"") -> None:
    """A box (or, with no plaintext, a MAC) exactly as documented, every field of it."""
    assert (vec["sender"], vec["receiver"]) == (sender, receiver)
    assert vec["context_hex"] == context.hex()
    assert vec["aad_hex" if plaintext else "body_hex"] == aad.hex()
    assert isinstance(vec["atc"], int)
    key = seal_key(blom, sender, receiver, context)
    assert vec["key_hex"] == key.hex()
    assert vec["gcm_aad_hex"] == (b"\x01" + vec["atc"].to_bytes(4, "big") + aad).hex()
    sealed = box(key, vec["atc"], h(vec["nonce_hex"]), plaintext, aad)
    if plaintext:
        assert vec["plaintext_hex"] == plaintext.hex()
        assert vec["box_hex"] == sealed.hex()
    else:
        assert "plaintext_hex" not in vec
        assert vec["mac_hex"] == sealed.hex() and len(sealed) == 33


def request_digest(*pieces: bytes) -> bytes:
    """protocol.md 7: each piece preceded by its length, 4 bytes big-endian."""
    return hashlib.sha256(b"nettx/request/v1" + b"".join(
        len(p).to_bytes(4, "big") + p for p in pieces)).digest()


def ids(v: dict[str, Any]) -> tuple[str, str, str, str]:
    p = v["parties"]
    return v["holder"], p["seller"], p["issuer"], p["delivery"]


def context(purpose: str, v: dict[str, Any]) -> bytes:
    return purpose.encode() + b"/" + h(v["order_id_hex"])


def test_the_header_is_the_documented_map(v: dict[str, Any]) -> None:
    holder, seller, issuer, delivery = ids(v)
    header = {"v": 1, "order": h(v["order_id_hex"]), "holder": holder, "seller": seller,
              "issuer": issuer, "delivery": delivery, "ts": v["timestamp"],
              "currency": "EUR", "policy": h(v["policy_digest_hex"])}
    assert cbor(header).hex() == v["header_hex"]
    assert isinstance(v["timestamp"], int)


def test_policy_digest_from_the_documented_table(v: dict[str, Any]) -> None:
    """protocol.md 3: the default policy's table, grant lists and exposures sorted."""
    contact = ["holder_name", "holder_address", "holder_phone", "holder_fax"]
    grants = {
        "seller": sorted([*contact, "items", "amount", "payment_type"]),
        "issuer": sorted([*contact, "item_numbers", "amount", "payment_type",
                          "card_number", "card_expiry"]),
        "delivery": sorted(["holder_name", "holder_phone", "holder_fax", "destination"]),
    }
    policy = cbor({"grants": grants, "exposures": []})
    assert policy.hex() == v["policy_cbor_hex"]
    assert hashlib.sha256(b"nettx/policy/v1" + policy).hexdigest() == v["policy_digest_hex"]
    assert cbor2.loads(h(v["form_cbor_hex"]))["policy"] == cbor2.loads(policy)


def test_policy_digest_with_exposures_sorted(v: dict[str, Any]) -> None:
    vec = v["policy_with_exposures"]
    policy = cbor2.loads(h(vec["policy_cbor_hex"]))
    assert policy["exposures"] == [["card_expiry", "seller"], ["destination", "seller"]]
    assert all(grant == sorted(grant) for grant in policy["grants"].values())
    rebuilt = cbor({"grants": policy["grants"],
                    "exposures": sorted(reversed(policy["exposures"]))})
    assert rebuilt.hex() == vec["policy_cbor_hex"]
    assert hashlib.sha256(b"nettx/policy/v1" + rebuilt).hexdigest() == vec["policy_digest_hex"]


def test_parts_commitments_and_order_digest(v: dict[str, Any], blom: dict[str, Any]) -> None:
    holder = v["holder"]
    header = h(v["header_hex"])
    commitments = {}
    for role in ROLES:
        salt, fields = h(v["salts_hex"][role]), h(v["fields_cbor_hex"][role])
        commitments[role] = hashlib.sha256(b"nettx/commit/v1" + salt + fields).digest()
        assert commitments[role].hex() == v["commitments_hex"][role]
    digest = hashlib.sha256(b"nettx/order/v1" + header
                            + b"".join(commitments[r] for r in ROLES)).digest()
    assert digest.hex() == v["order_digest_hex"]
    for role in ROLES:
        # the part's AAD: the role's name (not the identifier), the header as a byte string
        aad = cbor(["nettx/part/v1", role, header])
        plaintext = cbor({"fields": cbor2.loads(h(v["fields_cbor_hex"][role])),
                          "salt": h(v["salts_hex"][role]),
                          "commitments": {r: commitments[r] for r in ROLES}})
        check_box(blom, v["parts"][role], holder, v["parties"][role], context("part", v), aad,
                  plaintext)
    envelope = {"header": header, "parts": {r: h(v["parts"][r]["box_hex"]) for r in ROLES}}
    assert cbor(envelope).hex() == v["envelope_cbor_hex"]


def test_request_macs_cover_the_raw_digest(v: dict[str, Any], blom: dict[str, Any]) -> None:
    _, seller, issuer, delivery = ids(v)
    header = h(v["header_hex"])
    auth = request_digest(header, h(v["parts"]["issuer"]["box_hex"]))
    vec = v["authorise_request"]
    assert vec["request_digest_hex"] == auth.hex()
    check_box(blom, vec, seller, issuer, context("authorise", v), auth)
    approval = h(v["authorisation"]["mac_hex"])
    dreq = request_digest(header, h(v["parts"]["delivery"]["box_hex"]), approval)
    vec = v["delivery_request"]
    assert vec["request_digest_hex"] == dreq.hex()
    check_box(blom, vec, seller, delivery, context("delivery-request", v), dreq)


def test_answer_macs(v: dict[str, Any], blom: dict[str, Any]) -> None:
    _, seller, issuer, delivery = ids(v)
    order, digest = h(v["order_id_hex"]), h(v["order_digest_hex"])
    amount = 2490 + 2 * 1250
    check_box(blom, v["authorisation"], issuer, seller, context("authorisation", v),
              cbor(["nettx/authorisation/v1", order, "approved", "approved", amount, digest]))
    check_box(blom, v["decline"]["mac"], issuer, seller, context("authorisation", v),
              cbor(["nettx/authorisation/v1", order, "declined",
                    "declined by the card manager", amount, digest]))
    tracking = v["delivery_answer"]["tracking"]
    check_box(blom, v["delivery_answer"], delivery, seller, context("delivery-answer", v),
              cbor(["nettx/delivery-answer/v1", order, digest, tracking]))
    reason = v["reverse"]["reason"]
    check_box(blom, v["reverse"], seller, issuer, context("reverse", v),
              cbor(["nettx/reverse/v1", order, digest, reason]))
    check_box(blom, v["reversed"]["mac"], issuer, seller, context("reversed", v),
              cbor(["nettx/reversed/v1", order, "reversed", amount, digest]))
    check_box(blom, v["voided"]["mac"], issuer, seller, context("reversed", v),
              cbor(["nettx/reversed/v1", order, "voided", 0, digest]))


def padded(content: dict[str, Any]) -> bytes:
    """protocol.md 5: the smallest zero `pad` that brings the encoding to a multiple of 256."""
    for n in range(4096):
        raw = cbor({**content, "pad": bytes(n)})
        if len(raw) % 256 == 0:
            return raw
    raise AssertionError("no pad length fits")


def test_receipts(v: dict[str, Any], blom: dict[str, Any]) -> None:
    holder, _, issuer, delivery = ids(v)
    header, digest = h(v["header_hex"]), h(v["order_digest_hex"])
    amount = 4990
    issuer_aad = cbor(["nettx/receipt/v1", "issuer", header])
    ctx = context("receipt", v)
    approved = padded({"code": "approved", "reason": "approved", "amount": amount,
                       "digest": digest})
    check_box(blom, v["issuer_receipt"], issuer, holder, ctx, issuer_aad, approved)
    declined = padded({"code": "declined", "reason": "wrong expiry date", "amount": amount,
                       "digest": digest})
    check_box(blom, v["decline"]["receipt"], issuer, holder, ctx, issuer_aad, declined)
    reason = v["reverse"]["reason"]
    check_box(blom, v["reversed"]["receipt"], issuer, holder, ctx, issuer_aad,
              cbor({"code": "reversed", "reason": reason, "amount": amount, "digest": digest}))
    check_box(blom, v["voided"]["receipt"], issuer, holder, ctx, issuer_aad,
              cbor({"code": "voided", "reason": reason, "amount": 0, "digest": digest}))
    check_box(blom, v["delivery_receipt"], delivery, holder, ctx,
              cbor(["nettx/receipt/v1", "delivery", header]),
              cbor({"tracking": v["delivery_answer"]["tracking"], "digest": digest}))
    for vec in (v["issuer_receipt"], v["decline"]["receipt"]):
        assert len(h(vec["plaintext_hex"])) == 256
        assert set(cbor2.loads(h(vec["plaintext_hex"]))) == {"code", "reason", "amount",
                                                              "digest", "pad"}


def test_form_mac(v: dict[str, Any], blom: dict[str, Any]) -> None:
    holder, seller, _, _ = ids(v)
    vec = v["form_mac"]
    nonce, form = h(vec["nonce_hex"]), h(vec["form_cbor_hex"])
    digest = hashlib.sha256(b"nettx/form/v1" + form).digest()
    check_box(blom, vec["mac"], seller, holder, b"form/" + nonce,
              cbor(["nettx/form/v1", seller, holder, nonce, digest]))


def test_confirmations(v: dict[str, Any], blom: dict[str, Any]) -> None:
    assert len(v["confirmations"]) == 5
    for vec in v["confirmations"]:
        responder, challenger = vec["responder"], vec["challenger"]
        info = (lv(b"confirm") + lv(responder.encode()) + lv(challenger.encode()) + lv(b""))
        key = hkdf(pair_key(blom, responder, challenger), b"EP0791901/card/v1/confirm", info)
        assert vec["key_hex"] == key.hex()
        challenge = h(vec["challenge_hex"])
        response = hmac.new(key, b"confirm" + challenge, hashlib.sha256).digest()[:16]
        assert vec["response_hex"] == response.hex()
        assert cbor2.loads(h(vec["request_cbor_hex"])) == {
            "type": "confirm", "party": responder.split(":")[0], "peer": challenger,
            "challenge": challenge}


def test_a_session(v: dict[str, Any], blom: dict[str, Any]) -> None:
    """Section 12: the handshake, its proofs and keys, one frame each way, from the text."""
    vec = v["session"]
    i, r = vec["initiator"], vec["responder"]
    pk = pair_key(blom, i, r)
    assert vec["pair_key_hex"] == pk.hex()
    ni, nr = h(vec["initiator_nonce_hex"]), h(vec["responder_nonce_hex"])
    salt = b"EP0791901/card/v1/session"

    def info(label: bytes, sender: str, receiver: str, context: bytes = b"") -> bytes:
        return lv(label) + lv(sender.encode()) + lv(receiver.encode()) + lv(context)

    proof_keys = {i: hkdf(pk, salt, info(b"session-proof", i, r)),
                  r: hkdf(pk, salt, info(b"session-proof", r, i))}
    assert vec["proof_key_initiator_hex"] == proof_keys[i].hex()
    assert vec["proof_key_responder_hex"] == proof_keys[r].hex()

    def proof(sender: str, role: int) -> bytes:
        body = b"session-proof" + bytes((role,)) + ni + nr
        return hmac.new(proof_keys[sender], body, hashlib.sha256).digest()[:16]

    assert vec["initiator_proof_hex"] == proof(i, 1).hex()
    assert vec["responder_proof_hex"] == proof(r, 2).hex()
    assert cbor2.loads(h(vec["hello_cbor_hex"])) == {"type": "hello", "party": r.split(":")[0],
                                                     "peer": i, "nonce": ni}
    assert cbor2.loads(h(vec["hello_ack_cbor_hex"])) == {"type": "hello-ack", "nonce": nr,
                                                         "proof": proof(r, 2)}
    assert cbor2.loads(h(vec["hello_done_cbor_hex"])) == {"type": "hello-done",
                                                          "proof": proof(i, 1)}
    frame_keys = {1: hkdf(pk, salt, info(b"session-frame", i, r, ni + nr)),
                  2: hkdf(pk, salt, info(b"session-frame", r, i, ni + nr))}
    assert vec["frame_key_initiator_to_responder_hex"] == frame_keys[1].hex()
    assert vec["frame_key_responder_to_initiator_hex"] == frame_keys[2].hex()
    for name, direction in (("initiator_to_responder", 1), ("responder_to_initiator", 2)):
        framed = vec[name]
        body = h(framed["body_cbor_hex"])
        mac_input = b"nettx/session/v1/frame" + bytes((direction,)) + (0).to_bytes(8, "big") + body
        assert framed["mac_input_hex"] == mac_input.hex()
        mac = hmac.new(frame_keys[direction], mac_input, hashlib.sha256).digest()[:16]
        assert framed["mac_hex"] == mac.hex()
        assert h(framed["frame_cbor_hex"]) == cbor({"type": "frame", "seq": 0, "body": body,
                                                    "mac": mac})
    request = cbor2.loads(h(vec["initiator_to_responder"]["body_cbor_hex"]))
    assert request["type"] == "confirm" and request["peer"] == v["holder"]


def test_the_values_quoted_in_the_document_are_the_files(v: dict[str, Any]) -> None:
    """protocol.md 8.4 quotes values: each must be (part of) a value of the file."""
    text = (VECTORS.parent / "protocol.md").read_text()
    quoted = text[text.index("### 8.4 Key values"):text.index("## 9. Limits")]
    values: list[str] = []

    def collect(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, str):
            values.append(value)

    collect(v)
    tokens = [t.rstrip(".") for t in quoted.split() if len(t.rstrip(".")) >= 16]
    hexes = [t for t in tokens if all(c in "0123456789abcdef" for c in t)]
    assert len(hexes) >= 20
    for token in hexes:
        assert any(token in value for value in values), token
