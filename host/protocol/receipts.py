"""The receipts a party seals for the holder's card (docs/protocol.md, section 5.1), as the
holder's terminal reads them once the card has opened them: the card manager's word on the
money, the delivery company's on the shipment. What the seller says is checked against them."""

from __future__ import annotations

from dataclasses import dataclass

from host.protocol import codec
from host.protocol.codec import Fields


@dataclass(frozen=True, slots=True)
class IssuerReceipt:
    """An authorisation receipt (`approved` / `declined`, the precise reason) or a reversal
    receipt (`reversed`, `voided`, `declined`, the seller's reason)."""

    digest: bytes  # the order digest it is about
    code: str
    reason: str
    amount: int

    @classmethod
    def from_bytes(cls, plaintext: bytes) -> IssuerReceipt:
        m = Fields(codec.decode(plaintext, "receipt"), "issuer receipt")
        return cls(m.get("digest", bytes), m.get("code", str), m.get("reason", str),
                   m.get("amount", int))


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    digest: bytes
    tracking: str

    @classmethod
    def from_bytes(cls, plaintext: bytes) -> DeliveryReceipt:
        m = Fields(codec.decode(plaintext, "receipt"), "delivery receipt")
        return cls(m.get("digest", bytes), m.get("tracking", str))
