"""Fuzz harness for the envelope parser (host/protocol/envelope.py): the envelope map, its
header, and an opened part's plaintext, as a party meets them from the wire and from its own card.

Input layout: byte 0 % 3 chooses what the rest is:
    0   an envelope, CBOR, as an `order` message carries it: `Envelope.from_cbor`, then the
        header in it (`Header.from_bytes`, `check_fresh`) and each part's counter
    1   a header's bytes: `Header.from_bytes`
    2   a part's plaintext, as the card opened it: `parse_part` under a valid header, read by
        each party's reader (host/protocol/parts.py)

Declared errors: `EnvelopeError` and `WireError` (both `TransactionError`s with a code for the
wire). Invariants (a violation raises `Finding`):
- nothing else escapes;
- a header that parses is the deterministic encoding of itself (`to_bytes` gives the input
  back), so every MAC covers exactly one encoding;
- an envelope that parses round-trips through `to_cbor`, and its parts are within bounds;
- a part that parses commits to its own fields (the commitment checked is the one computed)
  and names only order fields; a seller part that parses is priced by the form at its
  amount.
"""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2

from card_applet import keys
from host.errors import TransactionError
from host.protocol import codec, envelope, parts
from host.protocol.envelope import (
    MAX_PART,
    SEAL_OVERHEAD,
    Envelope,
    Header,
    commitment,
    new_header,
    parse_part,
)
from host.protocol.order import CatalogueItem, Order, OrderField, OrderForm, Party

NOW = 1_790_000_000
FORM = OrderForm("seller:shop.example", "issuer:bank.example", "delivery:post.example", "EUR",
                 (CatalogueItem("A-100", "smart card reader", 2490),
                  CatalogueItem("B-200", "blank cards (10)", 1250)))
ORDER = Order(holder_name="Alice Martin", holder_address="1 rue de la Paix, Paris",
              holder_phone="+33 1 23 45 67 89", card_number="4970101234567890",
              card_expiry="09/29", destination="5 avenue Foch, Lyon",
              lines=(("A-100", 1), ("B-200", 2)))
HEADER = new_header(FORM, "holder:alice@example.org", order_id=bytes(range(16)), timestamp=NOW)
HEADER_BYTES = HEADER.to_bytes()


class Finding(AssertionError):
    """An input that breaks an invariant."""


def fake_seal(_party: Party, plaintext: bytes, _aad: bytes, _context: bytes) -> bytes:
    """The card's box layout without the cryptography (parsing never decrypts): version,
    counter, then the plaintext padded to the overhead."""
    return b"\x01" + (7).to_bytes(4, "big") + bytes(SEAL_OVERHEAD - 5) + plaintext


def check_header(raw: bytes) -> Header | None:
    try:
        header = Header.from_bytes(raw)
    except TransactionError:
        return None
    if header.to_bytes() != raw:
        raise Finding("a header parsed that is not its own deterministic encoding")
    with contextlib.suppress(TransactionError):
        header.check_fresh(300, NOW)
    return header


def check_envelope(raw: bytes) -> None:
    try:
        env = Envelope.from_cbor(codec.decode(raw, "envelope"))
    except TransactionError:
        return
    if Envelope.from_cbor(env.to_cbor()) != env:
        raise Finding("an envelope changed on its way through to_cbor")
    if not all(SEAL_OVERHEAD <= len(box) <= MAX_PART for box in env.parts.values()):
        raise Finding("an envelope part out of bounds passed")
    if check_header(env.header) is not None:
        for box in env.parts.values():
            keys.box_counter(box)


def check_part(plaintext: bytes) -> None:
    box = fake_seal(Party.SELLER, plaintext, b"", b"")
    for party in Party:
        try:
            opened = parse_part(HEADER, HEADER_BYTES, party, box, plaintext,
                                parts.reader(party, FORM))
        except TransactionError:
            continue
        fields: dict[str, Any] = codec.decode(plaintext)["fields"]
        salt = codec.decode(plaintext)["salt"]
        if commitment(salt, codec.encode(fields)) != opened.commitments[party]:
            raise Finding("a part passed that does not match its own commitment")
        if not set(fields) <= {f.value for f in OrderField}:
            raise Finding(f"a part passed with fields {sorted(fields)}")
        if opened.part.names != set(fields):
            raise Finding("a part's names are not the fields it carried")
        seller = opened.part
        if isinstance(seller, parts.SellerPart) and seller.amount != FORM.price(
                (line.number, line.quantity) for line in seller.items):
            raise Finding("a seller part passed at another price than the form's")


def run_one(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 0:
        check_envelope(rest)
    elif mode == 1:
        check_header(rest)
    else:
        check_part(rest)


def seeds() -> dict[str, bytes]:
    plaintexts: dict[Party, bytes] = {}

    def seal(party: Party, plaintext: bytes, aad: bytes, context: bytes) -> bytes:
        plaintexts[party] = plaintext
        return fake_seal(party, plaintext, aad, context)

    sealed = envelope.build(ORDER, FORM, HEADER, seal, salts={p: bytes(16) for p in Party})
    out = {
        "envelope": b"\x00" + codec.encode(sealed.envelope.to_cbor()),
        "envelope-two-parts": b"\x00" + codec.encode(
            {"header": HEADER_BYTES, "parts": {"seller": bytes(40), "issuer": bytes(40)}}),
        "header": b"\x01" + HEADER_BYTES,
        "header-version-2": b"\x01" + codec.encode({**codec.decode(HEADER_BYTES), "v": 2}),
        # the same header with its keys in another order: well-formed, not deterministic
        "header-not-canonical": b"\x01" + cbor2.dumps(
            dict(reversed(codec.decode(HEADER_BYTES).items()))),
    }
    for party, plaintext in plaintexts.items():
        out[f"part-{party}"] = b"\x02" + plaintext
    return out
