"""The protocol test vectors of docs/protocol.md, computed from fixed inputs.

    python -m tests.host.protocol_vectors > docs/vectors/protocol-v1.json

The rows and pair keys come from the shared Blom vectors (k = 4); salts, nonces, the order id,
the timestamp and the card's transaction counters are fixed here, so every byte is
reproducible. tests/host/test_protocol_vectors.py checks the committed file against this
computation and opens every box through the parties' applets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from card_applet import keys
from host.parties.issuer import DECLINED, padded
from host.parties.server import request_digest
from host.protocol import codec, envelope
from host.protocol.messages import Confirm, Confirmed, Hello, HelloAck, HelloDone
from host.protocol.order import (
    DEFAULT_GRANTS,
    CatalogueItem,
    Order,
    OrderField,
    OrderForm,
    PartitionPolicy,
    Party,
    split,
)
from host.protocol.session import Channel, Direction, SessionKeys, frame_mac
from host.protocol.wire import LENGTH

SHARED = Path(__file__).resolve().parents[2] / "docs" / "vectors" / "blom-v1.json"
HOLDER = "holder:alice@example.org"
IDS = {Party.SELLER: "seller:shop.example", Party.ISSUER: "issuer:card-manager.example",
       Party.DELIVERY: "delivery:parcel.example"}
ORDER_ID = bytes(range(16))
TIMESTAMP = 1_790_000_000
SALTS = {p: bytes([0x10 * (i + 1)]) * envelope.SALT_SIZE for i, p in enumerate(Party)}
NONCES = {p: bytes([0xA0 + i]) * keys.NONCE_SIZE for i, p in enumerate(Party)}
FIRST_ATC = 7
AUTH_NONCE = b"\xcc" * keys.NONCE_SIZE
FORM_NONCE = b"\xf0" * envelope.FORM_NONCE_SIZE  # the holder's, in its form request
FORM_MAC_NONCE = b"\xdd" * keys.NONCE_SIZE  # the seller's seal nonce for the form MAC
RECEIPT_NONCE = b"\xee" * keys.NONCE_SIZE
TRACKING = "TRK-0123456789AB"
REVERSE_REASON = "the delivery company refused: unreachable"
CHALLENGE = bytes(range(0x30, 0x40))  # a confirmation challenge (16 bytes)
INITIATOR_NONCE = bytes(range(0x40, 0x60))  # a session's nonces (32 bytes each)
RESPONDER_NONCE = bytes(range(0x60, 0x80))


def gcm_aad(atc: int, aad: bytes) -> bytes:
    """What AES-GCM authenticates for a box: version || ATC || the caller's aad (tag 81)."""
    return bytes((keys.SEAL_VERSION,)) + atc.to_bytes(4, "big") + aad


def box_vector(vectors: dict[str, Any], sender: str, receiver: str, ctx: bytes, atc: int,
               nonce: bytes, plaintext: bytes, aad: bytes) -> dict[str, Any]:
    """One seal box (a MAC when `plaintext` is empty) with every intermediate value."""
    key = keys.seal_key(pair_key(vectors, sender, receiver), sender.encode(),
                        receiver.encode(), ctx)
    out: dict[str, Any] = {"sender": sender, "receiver": receiver}
    if plaintext:
        out["plaintext_hex"] = plaintext.hex()
    out.update({"aad_hex": aad.hex(), "context_hex": ctx.hex(), "key_hex": key.hex(),
                "atc": atc, "nonce_hex": nonce.hex(), "gcm_aad_hex": gcm_aad(atc, aad).hex()})
    out["box_hex" if plaintext else "mac_hex"] = keys.seal(key, atc, plaintext, aad,
                                                           nonce=nonce).hex()
    return out


def blom_vectors() -> dict[str, Any]:
    return json.loads(SHARED.read_text())


def pair_key(vectors: dict[str, Any], a: str, b: str) -> bytes:
    for pair in vectors["pairs"]:
        if {pair["a"], pair["b"]} == {a, b}:
            return bytes.fromhex(pair["pair_key_hex"])
    raise KeyError((a, b))


def the_form() -> OrderForm:
    return OrderForm(IDS[Party.SELLER], IDS[Party.ISSUER], IDS[Party.DELIVERY], "EUR",
                     (CatalogueItem("A-100", "smart card reader", 2490),
                      CatalogueItem("B-200", "blank cards (10)", 1250)))


def the_order() -> Order:
    return Order(holder_name="Alice Martin", holder_address="1 rue de la Paix, Paris",
                 holder_phone="+33 1 23 45 67 89", card_number="4970101234567890",
                 card_expiry="09/29", destination="5 avenue Foch, Lyon",
                 lines=(("A-100", 1), ("B-200", 2)))


def form_vectors(vectors: dict[str, Any], form: OrderForm) -> dict[str, Any]:
    """The seller's form for the holder's request: its MAC under seller -> holder."""
    seller = IDS[Party.SELLER]
    raw = codec.encode(form.to_cbor())
    body = envelope.form_body(seller, HOLDER, FORM_NONCE, raw)
    ctx = envelope.context("form", FORM_NONCE)
    return {
        "request_cbor_hex": codec.encode({"type": "form-request", "holder": HOLDER,
                                          "nonce": FORM_NONCE}).hex(),
        "nonce_hex": FORM_NONCE.hex(), "form_cbor_hex": raw.hex(),
        "form_digest_hex": envelope.form_digest(raw).hex(),
        "mac": mac_vector(vectors, seller, HOLDER, ctx, 5, FORM_MAC_NONCE, body),
    }


def mac_vector(vectors: dict[str, Any], sender: str, receiver: str, ctx: bytes, atc: int,
               nonce: bytes, body: bytes) -> dict[str, Any]:
    """A MAC: the seal box of an empty plaintext with `body` as the aad."""
    out = box_vector(vectors, sender, receiver, ctx, atc, nonce, b"", body)
    out["body_hex"] = out.pop("aad_hex")
    return out


def nonce(byte: int) -> bytes:
    return bytes((byte,)) * keys.NONCE_SIZE


def receipt_vector(vectors: dict[str, Any], sender: Party, header: bytes, order_id: bytes,
                   atc: int, seal_nonce: bytes, content: dict[str, Any]) -> dict[str, Any]:
    """A receipt: `content` (a CBOR map) sealed for the holder's card."""
    return box_vector(vectors, IDS[sender], HOLDER, envelope.context("receipt", order_id), atc,
                      seal_nonce, codec.encode(content),
                      envelope.receipt_aad(sender.value, header))


def confirm_vector(vectors: dict[str, Any], responder: str, challenger: str,
                   asked: str) -> dict[str, Any]:
    """Claim 7: `responder` answers `challenger`'s challenge (apdu.md 5.2, 5.4)."""
    key = keys.confirm_key(pair_key(vectors, responder, challenger), responder.encode(),
                           challenger.encode())
    return {
        "responder": responder, "challenger": challenger, "challenge_hex": CHALLENGE.hex(),
        "request_cbor_hex": codec.encode({"type": "confirm", "party": asked,
                                          "peer": challenger, "challenge": CHALLENGE}).hex(),
        "key_hex": key.hex(), "response_hex": keys.confirm_mac(key, CHALLENGE).hex(),
    }


def session_vector(vectors: dict[str, Any], initiator: str, responder: str,
                   role: str) -> dict[str, Any]:
    """A session (docs/protocol.md 12): the handshake's three messages, both proofs, both
    frame keys, and one authenticated frame each way: the holder's confirmation of
    `responder` relayed in it, and its answer."""
    pk = pair_key(vectors, initiator, responder)
    i, r = initiator.encode(), responder.encode()
    ni, nr = INITIATOR_NONCE, RESPONDER_NONCE
    i_proof_key, r_proof_key = keys.session_proof_key(pk, i, r), keys.session_proof_key(pk, r, i)
    i_proof = keys.session_proof(i_proof_key, keys.SESSION_INITIATOR, ni, nr)
    r_proof = keys.session_proof(r_proof_key, keys.SESSION_RESPONDER, ni, nr)
    forward = keys.session_frame_key(pk, i, r, ni, nr)
    back = keys.session_frame_key(pk, r, i, ni, nr)
    ours = Channel(SessionKeys(forward, back), initiator=True)
    theirs = Channel(SessionKeys(back, forward), initiator=False)
    request = Confirm(role, HOLDER, CHALLENGE).to_frame()
    answer_key = keys.confirm_key(pair_key(vectors, responder, HOLDER), r, HOLDER.encode())
    answer = Confirmed(keys.confirm_mac(answer_key, CHALLENGE)).to_frame()

    def framed(channel: Channel, direction: Direction, key: bytes,
               carried: bytes) -> dict[str, Any]:
        body = carried[LENGTH.size:]
        return {"seq": 0, "direction": int(direction), "body_cbor_hex": body.hex(),
                "mac_input_hex": (b"nettx/session/v1/frame" + bytes((direction,))
                                  + bytes(8) + body).hex(),
                "mac_hex": frame_mac(key, direction, 0, body).hex(),
                "frame_cbor_hex": channel.seal(carried)[LENGTH.size:].hex()}

    return {
        "initiator": initiator, "responder": responder,
        "pair_key_hex": pk.hex(),
        "initiator_nonce_hex": ni.hex(), "responder_nonce_hex": nr.hex(),
        "hello_cbor_hex": Hello(role, initiator, ni).to_frame()[LENGTH.size:].hex(),
        "proof_key_initiator_hex": i_proof_key.hex(),
        "proof_key_responder_hex": r_proof_key.hex(),
        "responder_proof_hex": r_proof.hex(),
        "hello_ack_cbor_hex": HelloAck(nr, r_proof).to_frame()[LENGTH.size:].hex(),
        "initiator_proof_hex": i_proof.hex(),
        "hello_done_cbor_hex": HelloDone(i_proof).to_frame()[LENGTH.size:].hex(),
        "frame_key_initiator_to_responder_hex": forward.hex(),
        "frame_key_responder_to_initiator_hex": back.hex(),
        "initiator_to_responder": framed(ours, Direction.INITIATOR_TO_RESPONDER, forward,
                                         request),
        "responder_to_initiator": framed(theirs, Direction.RESPONDER_TO_INITIATOR, back,
                                         answer),
    }


def exposing_policy() -> PartitionPolicy:
    """A policy with two exposures: the seller also gets the destination and the expiry."""
    grants = {**DEFAULT_GRANTS, Party.SELLER: DEFAULT_GRANTS[Party.SELLER]
              | {OrderField.DESTINATION, OrderField.CARD_EXPIRY}}
    return PartitionPolicy(grants, frozenset({(OrderField.DESTINATION, Party.SELLER),
                                              (OrderField.CARD_EXPIRY, Party.SELLER)}))


def compute() -> dict[str, Any]:
    vectors = blom_vectors()
    form, order = the_form(), the_order()
    header = envelope.new_header(form, HOLDER, order_id=ORDER_ID, timestamp=TIMESTAMP)
    trace: dict[Party, dict[str, Any]] = {}
    atc = {p: FIRST_ATC + i for i, p in enumerate(Party)}
    seller, issuer, delivery = (IDS[p] for p in Party)

    def seal(party: Party, plaintext: bytes, aad: bytes, ctx: bytes) -> bytes:
        trace[party] = box_vector(vectors, HOLDER, IDS[party], ctx, atc[party],
                                  NONCES[party], plaintext, aad)
        return bytes.fromhex(trace[party]["box_hex"])

    sealed = envelope.build(order, form, header, seal, salts=SALTS)
    hdr, digest, amount = sealed.envelope.header, sealed.digest, order.amount(form)
    parts = sealed.envelope.parts

    def ctx(purpose: str) -> bytes:
        return envelope.context(purpose, ORDER_ID)

    authorise_digest = request_digest(hdr, parts[Party.ISSUER])
    authorisation = mac_vector(vectors, issuer, seller, ctx("authorisation"), 3, AUTH_NONCE,
                               envelope.authorisation_body(ORDER_ID, "approved", "approved",
                                                           amount, digest))
    approval = bytes.fromhex(authorisation["mac_hex"])
    delivery_digest = request_digest(hdr, parts[Party.DELIVERY], approval)
    reverse_body = envelope.reverse_body(ORDER_ID, digest, REVERSE_REASON)
    return {
        "about": "nettx protocol v1 vectors (docs/protocol.md section 8); "
                 "rows from docs/vectors/blom-v1.json",
        "holder": HOLDER,
        "parties": {p.value: IDS[p] for p in Party},
        "form_cbor_hex": codec.encode(form.to_cbor()).hex(),
        "policy_cbor_hex": codec.encode(form.policy.to_cbor()).hex(),
        "policy_digest_hex": form.policy.digest().hex(),
        "policy_with_exposures": {
            "policy_cbor_hex": codec.encode(exposing_policy().to_cbor()).hex(),
            "policy_digest_hex": exposing_policy().digest().hex()},
        "order_id_hex": ORDER_ID.hex(),
        "timestamp": TIMESTAMP,
        "header_hex": hdr.hex(),
        "salts_hex": {p.value: SALTS[p].hex() for p in Party},
        "fields_cbor_hex": {p.value: codec.encode(f).hex()
                            for p, f in split(order, form).items()},
        "commitments_hex": {p.value: c.hex() for p, c in sealed.commitments.items()},
        "order_digest_hex": digest.hex(),
        "parts": {p.value: trace[p] for p in Party},
        "envelope_cbor_hex": codec.encode(sealed.envelope.to_cbor()).hex(),
        "authorise_request": {"request_digest_hex": authorise_digest.hex(),
                              **mac_vector(vectors, seller, issuer, ctx("authorise"), 11,
                                           nonce(0xB1), authorise_digest)},
        "authorisation": authorisation,
        "issuer_receipt": receipt_vector(vectors, Party.ISSUER, hdr, ORDER_ID, 4, RECEIPT_NONCE,
                                         padded({"code": "approved", "reason": "approved",
                                                 "amount": amount, "digest": digest})),
        "delivery_request": {"request_digest_hex": delivery_digest.hex(),
                             **mac_vector(vectors, seller, delivery, ctx("delivery-request"),
                                          12, nonce(0xB2), delivery_digest)},
        "delivery_answer": {"tracking": TRACKING,
                            **mac_vector(vectors, delivery, seller, ctx("delivery-answer"), 1,
                                         nonce(0xB3), envelope.delivery_answer_body(
                                             ORDER_ID, digest, TRACKING))},
        "delivery_receipt": receipt_vector(vectors, Party.DELIVERY, hdr, ORDER_ID, 2,
                                           nonce(0xB4), {"tracking": TRACKING,
                                                         "digest": digest}),
        "reverse": {"reason": REVERSE_REASON,
                    **mac_vector(vectors, seller, issuer, ctx("reverse"), 13, nonce(0xB5),
                                 reverse_body)},
        "reversed": {
            "mac": mac_vector(vectors, issuer, seller, ctx("reversed"), 5, nonce(0xB6),
                              envelope.reversed_body(ORDER_ID, "reversed", amount, digest)),
            "receipt": receipt_vector(vectors, Party.ISSUER, hdr, ORDER_ID, 6, nonce(0xB7),
                                      {"code": "reversed", "reason": REVERSE_REASON,
                                       "amount": amount, "digest": digest}),
        },
        "voided": {
            "mac": mac_vector(vectors, issuer, seller, ctx("reversed"), 7, nonce(0xB8),
                              envelope.reversed_body(ORDER_ID, "voided", 0, digest)),
            "receipt": receipt_vector(vectors, Party.ISSUER, hdr, ORDER_ID, 8, nonce(0xB9),
                                      {"code": "voided", "reason": REVERSE_REASON,
                                       "amount": 0, "digest": digest}),
        },
        "form_mac": form_vectors(vectors, form),
        "decline": {
            "mac": mac_vector(vectors, issuer, seller, ctx("authorisation"), 9, nonce(0xBA),
                              envelope.authorisation_body(ORDER_ID, "declined", DECLINED,
                                                          amount, digest)),
            "receipt": receipt_vector(vectors, Party.ISSUER, hdr, ORDER_ID, 10, nonce(0xBB),
                                      padded({"code": "declined",
                                              "reason": "wrong expiry date",
                                              "amount": amount, "digest": digest})),
        },
        "confirmations": [
            confirm_vector(vectors, seller, HOLDER, "seller"),
            confirm_vector(vectors, issuer, HOLDER, "issuer"),
            confirm_vector(vectors, delivery, HOLDER, "delivery"),
            confirm_vector(vectors, issuer, seller, "issuer"),
            confirm_vector(vectors, delivery, seller, "delivery"),
        ],
        "session": session_vector(vectors, seller, issuer, "issuer"),
    }


if __name__ == "__main__":
    json.dump(compute(), sys.stdout, indent=1)
    sys.stdout.write("\n")
