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
from host import codec, envelope
from host.issuer import DECLINED, padded
from host.order import CatalogueItem, Order, OrderForm, Party, split
from host.server import request_digest

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


def form_vectors(vectors: dict[str, Any], form: OrderForm) -> dict[str, str]:
    """The seller's form for the holder's request: its MAC under seller -> holder."""
    seller = IDS[Party.SELLER]
    raw = codec.encode(form.to_cbor())
    body = envelope.form_body(seller, HOLDER, FORM_NONCE, raw)
    ctx = envelope.context("form", FORM_NONCE)
    key = keys.seal_key(pair_key(vectors, seller, HOLDER), seller.encode(), HOLDER.encode(),
                        ctx)
    return {
        "request_cbor_hex": codec.encode({"type": "form-request", "holder": HOLDER,
                                          "nonce": FORM_NONCE}).hex(),
        "nonce_hex": FORM_NONCE.hex(), "form_cbor_hex": raw.hex(),
        "form_digest_hex": envelope.form_digest(raw).hex(), "body_hex": body.hex(),
        "context_hex": ctx.hex(), "key_hex": key.hex(), "atc": "5",
        "mac_nonce_hex": FORM_MAC_NONCE.hex(),
        "mac_hex": keys.seal(key, 5, b"", body, nonce=FORM_MAC_NONCE).hex(),
    }


def decline_vectors(vectors: dict[str, Any], header: bytes, digest: bytes,
                    amount: int) -> dict[str, str]:
    """A decline: one reason for the seller, the precise one sealed for the holder."""
    issuer = IDS[Party.ISSUER]
    body = envelope.authorisation_body(ORDER_ID, "declined", DECLINED, amount, digest)
    plaintext = codec.encode({**padded({"code": "declined", "reason": "wrong expiry date",
                                        "amount": amount, "digest": digest})})
    ctx = envelope.context("receipt", ORDER_ID)
    aad = envelope.receipt_aad("issuer", header)
    key = keys.seal_key(pair_key(vectors, issuer, HOLDER), issuer.encode(), HOLDER.encode(),
                        ctx)
    return {
        "authorisation_body_hex": body.hex(), "receipt_plaintext_hex": plaintext.hex(),
        "receipt_aad_hex": aad.hex(), "receipt_context_hex": ctx.hex(),
        "receipt_key_hex": key.hex(), "receipt_atc": "4",
        "receipt_nonce_hex": RECEIPT_NONCE.hex(),
        "receipt_hex": keys.seal(key, 4, plaintext, aad, nonce=RECEIPT_NONCE).hex(),
    }


def compute() -> dict[str, Any]:
    vectors = blom_vectors()
    form, order = the_form(), the_order()
    header = envelope.new_header(form, HOLDER, order_id=ORDER_ID, timestamp=TIMESTAMP)
    trace: dict[Party, dict[str, str]] = {}
    atc = {p: FIRST_ATC + i for i, p in enumerate(Party)}

    def seal(party: Party, plaintext: bytes, aad: bytes, ctx: bytes) -> bytes:
        key = keys.seal_key(pair_key(vectors, HOLDER, IDS[party]), HOLDER.encode(),
                            IDS[party].encode(), ctx)
        box = keys.seal(key, atc[party], plaintext, aad, nonce=NONCES[party])
        trace[party] = {"plaintext_hex": plaintext.hex(), "aad_hex": aad.hex(),
                        "context_hex": ctx.hex(), "seal_key_hex": key.hex(),
                        "atc": str(atc[party]), "nonce_hex": NONCES[party].hex(),
                        "box_hex": box.hex()}
        return box

    sealed = envelope.build(order, form, header, seal, salts=SALTS)
    issuer_part = sealed.envelope.parts[Party.ISSUER]
    auth_body = envelope.authorisation_body(ORDER_ID, "approved", "approved",
                                            order.amount(form), sealed.digest)
    auth_ctx = envelope.context("authorisation", ORDER_ID)
    auth_key = keys.seal_key(pair_key(vectors, IDS[Party.ISSUER], IDS[Party.SELLER]),
                             IDS[Party.ISSUER].encode(), IDS[Party.SELLER].encode(), auth_ctx)
    return {
        "about": "nettx protocol v1 vectors (docs/protocol.md); rows from shared blom-v1",
        "holder": HOLDER,
        "parties": {p.value: IDS[p] for p in Party},
        "form_cbor_hex": codec.encode(form.to_cbor()).hex(),
        "policy_digest_hex": form.policy.digest().hex(),
        "order_id_hex": ORDER_ID.hex(),
        "timestamp": TIMESTAMP,
        "header_hex": sealed.envelope.header.hex(),
        "salts_hex": {p.value: SALTS[p].hex() for p in Party},
        "fields_cbor_hex": {p.value: codec.encode(f).hex()
                            for p, f in split(order, form).items()},
        "commitments_hex": {p.value: c.hex() for p, c in sealed.commitments.items()},
        "order_digest_hex": sealed.digest.hex(),
        "parts": {p.value: trace[p] for p in Party},
        "envelope_cbor_hex": codec.encode(sealed.envelope.to_cbor()).hex(),
        "authorise_request_digest_hex": request_digest(sealed.envelope.header,
                                                       issuer_part).hex(),
        "authorisation": {
            "body_hex": auth_body.hex(), "context_hex": auth_ctx.hex(),
            "key_hex": auth_key.hex(), "nonce_hex": AUTH_NONCE.hex(), "atc": "3",
            "mac_hex": keys.seal(auth_key, 3, b"", auth_body, nonce=AUTH_NONCE).hex(),
        },
        "form_mac": form_vectors(vectors, form),
        "decline": decline_vectors(vectors, sealed.envelope.header, sealed.digest,
                                   order.amount(form)),
    }


if __name__ == "__main__":
    json.dump(compute(), sys.stdout, indent=1)
    sys.stdout.write("\n")
