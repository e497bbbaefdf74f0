"""The order envelope (docs/protocol.md, "Envelope"): a header in clear and one sealed part per
party, each sealed *on the holder's card* under the holder -> party direction of their pair key.

Theory of operation. The header (version, order id, the four identifiers, timestamp, currency,
policy digest) is encoded once, as deterministic CBOR, and those exact bytes are authenticated
with every part. Each part's plaintext carries its fields, a fresh salt and the commitments
(salted SHA-256) of all three parts, as SET's dual signature did:

    commitment(p) = SHA-256("nettx/commit/v1" || salt_p || cbor(fields_p))
    order digest  = SHA-256("nettx/order/v1" || header || c_seller || c_issuer || c_delivery)

Every party that opens its part can compute the same order digest, without seeing the other
parts. So the card manager's authorisation (a MAC over the digest) provably refers to the
seller's view of the order, a part cannot move to another order (its AAD and key context name
the order), and a part cannot be relabelled for another party (its AAD names the party).

Sealing and opening are callbacks: the holder's card does them through APDUs, a party's
security module through the same applet in-process. This module never sees a pair key.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from card_applet import blom, keys
from host.errors import EnvelopeError, ErrorCode, WireError
from host.protocol import codec
from host.protocol.codec import Fields
from host.protocol.order import Order, OrderField, OrderForm, Party, check_role, split

VERSION = 1
ORDER_ID_SIZE = 16
SALT_SIZE = 16
DIGEST_SIZE = 32
MAX_PART = 16 * 1024
#: a part carries this much overhead from the card's seal box (docs/apdu.md)
SEAL_OVERHEAD = keys.SEAL_OVERHEAD

Seal = Callable[[Party, bytes, bytes, bytes], bytes]  # (party, plaintext, aad, context) -> box

#: the parties in their order, and the names a part may carry: iterating an enum costs more
#: than the rest of a part's checks
PARTIES = tuple(Party)
PART_NAMES = frozenset(p.value for p in Party)
FIELD_NAMES = frozenset(f.value for f in OrderField)


@dataclass(frozen=True, slots=True)
class Header:
    order_id: bytes
    holder: str
    seller: str
    issuer: str
    delivery: str
    timestamp: int  # seconds since the epoch, the holder's clock
    currency: str
    policy_digest: bytes
    version: int = VERSION

    def party_id(self, party: Party) -> str:
        return {Party.SELLER: self.seller, Party.ISSUER: self.issuer,
                Party.DELIVERY: self.delivery}[party]

    def to_bytes(self) -> bytes:
        return codec.encode_map({
            "v": self.version, "order": self.order_id, "holder": self.holder,
            "seller": self.seller, "issuer": self.issuer, "delivery": self.delivery,
            "ts": self.timestamp, "currency": self.currency, "policy": self.policy_digest,
        })

    @classmethod
    def from_bytes(cls, raw: bytes) -> Header:
        m = Fields(codec.decode(raw, "header"), "header")
        version = m.get("v", int)
        if version != VERSION:
            raise EnvelopeError(ErrorCode.VERSION, f"envelope version {version} is not supported")
        header = cls(
            order_id=m.get("order", bytes, min_size=ORDER_ID_SIZE, max_size=ORDER_ID_SIZE),
            holder=m.get("holder", str, min_size=1, max_size=blom.MAX_ID_BYTES),
            seller=m.get("seller", str, min_size=1, max_size=blom.MAX_ID_BYTES),
            issuer=m.get("issuer", str, min_size=1, max_size=blom.MAX_ID_BYTES),
            delivery=m.get("delivery", str, min_size=1, max_size=blom.MAX_ID_BYTES),
            timestamp=m.get("ts", int), currency=m.get("currency", str, max_size=3),
            policy_digest=m.get("policy", bytes, min_size=DIGEST_SIZE, max_size=DIGEST_SIZE),
            version=version,
        )
        try:
            for ident, role in ((header.holder, "holder"), (header.seller, "seller"),
                                (header.issuer, "issuer"), (header.delivery, "delivery")):
                check_role(ident, role)
        except ValueError as exc:
            raise EnvelopeError(ErrorCode.MALFORMED, f"header: {exc}") from exc
        # the exact bytes are what every MAC covers: accept only the one encoding of them
        if header.to_bytes() != raw:
            raise EnvelopeError(ErrorCode.MALFORMED, "header is not in deterministic CBOR")
        return header

    def check_fresh(self, window: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if abs(now - self.timestamp) > window:
            raise EnvelopeError(ErrorCode.STALE, f"timestamp {self.timestamp} is outside the "
                                         f"{window} s window")


@dataclass(frozen=True, slots=True)
class Envelope:
    header: bytes
    parts: Mapping[Party, bytes]

    def to_cbor(self) -> dict[str, Any]:
        return {"header": self.header, "parts": {p.value: box for p, box in self.parts.items()}}

    @classmethod
    def from_cbor(cls, value: Any) -> Envelope:
        m = Fields(value, "envelope")
        parts = m.sub("parts")
        if parts.map.keys() != PART_NAMES:
            raise EnvelopeError(ErrorCode.MALFORMED, "an envelope has exactly the seller, "
                                                     "issuer and delivery parts")
        return cls(
            header=m.get("header", bytes, max_size=1024),
            parts={p: parts.get(p.value, bytes, min_size=SEAL_OVERHEAD, max_size=MAX_PART)
                   for p in PARTIES},
        )


def commitment(salt: bytes, fields_bytes: bytes) -> bytes:
    return hashlib.sha256(b"nettx/commit/v1" + salt + fields_bytes).digest()


def order_digest(header: bytes, commitments: Mapping[Party, bytes]) -> bytes:
    return hashlib.sha256(b"nettx/order/v1" + header
                          + b"".join(commitments[p] for p in PARTIES)).digest()


def part_aad(party: Party, header: bytes) -> bytes:
    return codec.encode(["nettx/part/v1", party.value, header])


def context(purpose: str, order_id: bytes) -> bytes:
    """Key-derivation context for the card's seal key: the purpose and the order, so no key
    serves two purposes or two orders (the card bounds it to 64 bytes)."""
    return purpose.encode() + b"/" + order_id


def new_header(form: OrderForm, holder: str, *, order_id: bytes | None = None,
               timestamp: int | None = None) -> Header:
    return Header(
        order_id=order_id or secrets.token_bytes(ORDER_ID_SIZE), holder=holder,
        seller=form.seller, issuer=form.issuer, delivery=form.delivery,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        currency=form.currency, policy_digest=form.policy.digest(),
    )


@dataclass(frozen=True, slots=True)
class SealedOrder:
    envelope: Envelope
    header: Header
    digest: bytes
    commitments: Mapping[Party, bytes]


def build(order: Order, form: OrderForm, header: Header, seal: Seal,
          salts: Mapping[Party, bytes] | None = None) -> SealedOrder:
    """Split the order by the form's policy and seal each part through `seal`."""
    header_bytes = header.to_bytes()
    values = split(order, form)
    fields = {p: codec.encode(f) for p, f in values.items()}
    salts = salts or {p: secrets.token_bytes(SALT_SIZE) for p in Party}
    commitments = {p: commitment(salts[p], fields[p]) for p in Party}
    parts = {}
    for party in Party:
        plaintext = codec.encode({
            "fields": values[party], "salt": salts[party],
            "commitments": {p.value: c for p, c in commitments.items()},
        })
        parts[party] = seal(party, plaintext, part_aad(party, header_bytes),
                            context("part", header.order_id))
    return SealedOrder(Envelope(header_bytes, parts), header,
                       order_digest(header_bytes, commitments), commitments)


P = TypeVar("P")
#: a party's reading of its part's fields into its typed part (host.protocol.parts); it
#: raises the EnvelopeError the peer is told, and sees the header it was sealed under
PartReader = Callable[[Header, Mapping[str, object]], P]


@dataclass(frozen=True, slots=True)
class OpenedPart(Generic[P]):
    header: Header
    header_bytes: bytes  # the exact bytes every MAC and AAD of this order covers
    party: Party
    part: P  # its fields, typed for the party
    commitments: Mapping[Party, bytes]
    digest: bytes
    atc: int  # the holder card's transaction counter, authenticated by the seal


def parse_part(header: Header, header_bytes: bytes, party: Party, box: bytes,
               plaintext: bytes, read: PartReader[P]) -> OpenedPart[P]:
    """Check an opened part's structure and its own commitment, then `read` its fields;
    compute the order digest."""
    try:
        m = Fields(codec.decode(plaintext, "part"), "part")
        fields = m.get("fields", dict, max_size=64)
        salt = m.get("salt", bytes, min_size=SALT_SIZE, max_size=SALT_SIZE)
        cm = m.sub("commitments")
        commitments = {p: cm.get(p.value, bytes, min_size=DIGEST_SIZE, max_size=DIGEST_SIZE)
                       for p in PARTIES}
    except WireError as exc:
        raise EnvelopeError(ErrorCode.MALFORMED, str(exc)) from exc
    if len(cm.map) != len(Party):
        raise EnvelopeError(ErrorCode.MALFORMED, "part commits to other parts than the three")
    if not all(isinstance(name, str) and name in FIELD_NAMES for name in fields):
        raise EnvelopeError(ErrorCode.MALFORMED,
                            "the part names a field that is not an order field")
    if commitment(salt, codec.encode(fields)) != commitments[party]:
        raise EnvelopeError(ErrorCode.COMMITMENT,
                            f"the {party} part does not match its own commitment")
    return OpenedPart(header, header_bytes, party, read(header, fields), commitments,
                      order_digest(header_bytes, commitments), keys.box_counter(box))


# -- authenticated answers between parties -----------------------------------------------------


def authorisation_body(order_id: bytes, code: str, reason: str, amount: int,
                       digest: bytes) -> bytes:
    return codec.encode(["nettx/authorisation/v1", order_id, code, reason, amount, digest])


def reverse_body(order_id: bytes, digest: bytes, reason: str) -> bytes:
    return codec.encode(["nettx/reverse/v1", order_id, digest, reason])


def reversed_body(order_id: bytes, code: str, amount: int, digest: bytes) -> bytes:
    return codec.encode(["nettx/reversed/v1", order_id, code, amount, digest])


def delivery_answer_body(order_id: bytes, digest: bytes, tracking: str) -> bytes:
    return codec.encode(["nettx/delivery-answer/v1", order_id, digest, tracking])


def receipt_aad(kind: str, header: bytes) -> bytes:
    return codec.encode(["nettx/receipt/v1", kind, header])


# -- the seller's order form, authenticated for one holder's request ---------------------------

FORM_NONCE_SIZE = 16


def form_digest(form: bytes) -> bytes:
    """Over the exact bytes of the `form` field as they travelled, never a re-encoding."""
    return hashlib.sha256(b"nettx/form/v1" + form).digest()


def form_body(seller: str, holder: str, nonce: bytes, form: bytes) -> bytes:
    """What the seller's form MAC covers: who answers whom, the holder's fresh nonce (so an
    old form does not verify) and the form itself."""
    return codec.encode(["nettx/form/v1", seller, holder, nonce, form_digest(form)])
