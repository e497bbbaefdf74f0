"""Each party's part of the envelope as typed values, read once from the plaintext its key
module opened (host.protocol.envelope.parse_part checks the structure and the commitment
first). What a party may not act on is refused here, with the code its peer is told:

- the seller's part must be made on this seller's form (`wrong-form`), carry exactly the
  fields its policy grants (`policy`), well-formed item lines (`malformed`) of items in the
  catalogue (`unknown-item`), priced by the form to the amount claimed (`amount`);
- the delivery company's part must name a destination (`malformed`).

The card manager's part is never refused here: a part lacking a usable amount or card number
is a *decline* (an authorisation the seller can show the holder), not a wire error, so its
values are kept as found, None where a field is missing or of the wrong type.

`names` is the set of field names a part carried: what a party records it has seen (the
`views` table), whatever it reads of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from host.errors import EnvelopeError, ErrorCode, OrderError
from host.protocol.envelope import Header, PartReader
from host.protocol.order import QUANTITIES, OrderField, OrderForm, Party

F = OrderField


def _text(fields: Mapping[str, object], name: OrderField) -> str | None:
    value = fields.get(name.value)
    return value if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    # bool is an int in Python; true is not an amount or a quantity
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class ItemLine:
    number: str
    name: str
    quantity: int

    def __str__(self) -> str:
        return f"{self.quantity} x {self.number} ({self.name})"


@dataclass(frozen=True, slots=True)
class SellerPart:
    names: frozenset[str]
    items: tuple[ItemLine, ...]
    amount: int  # minor units, checked against the form's prices
    payment_type: str | None
    holder_name: str | None
    holder_address: str | None
    holder_phone: str | None
    holder_fax: str | None

    @classmethod
    def read(cls, form: OrderForm, header: Header, fields: Mapping[str, object]) -> SellerPart:
        if (header.issuer, header.delivery, header.currency) != \
                (form.issuer, form.delivery, form.currency) \
                or header.policy_digest != form.policy.digest():
            raise EnvelopeError(ErrorCode.WRONG_FORM,
                                "the order was not made on this seller's form")
        # OrderField is a StrEnum: its members are the very strings a part's keys are
        if fields.keys() != form.policy.fields_for(Party.SELLER):
            raise EnvelopeError(ErrorCode.POLICY, "the seller part carries other fields than "
                                                  "the policy grants")
        items, claimed = fields[F.ITEMS.value], _integer(fields[F.AMOUNT.value])
        if claimed is None or not isinstance(items, list) or not items:
            raise EnvelopeError(ErrorCode.MALFORMED, "the seller part needs items and an amount")
        lines = tuple(_item_line(line) for line in items)
        try:
            amount = form.price((line.number, line.quantity) for line in lines)
        except OrderError as exc:
            raise EnvelopeError(ErrorCode.UNKNOWN_ITEM, str(exc)) from exc
        if amount != claimed:
            raise EnvelopeError(ErrorCode.AMOUNT, f"the amount due is {amount}, not {claimed}")
        return cls(frozenset(fields), lines, amount, _text(fields, F.PAYMENT_TYPE),
                   _text(fields, F.HOLDER_NAME), _text(fields, F.HOLDER_ADDRESS),
                   _text(fields, F.HOLDER_PHONE), _text(fields, F.HOLDER_FAX))

    @staticmethod
    def reader(form: OrderForm) -> PartReader[SellerPart]:
        """The seller's reader of its parts, on its own form."""
        return lambda header, fields: SellerPart.read(form, header, fields)


def _item_line(line: object) -> ItemLine:
    if not (isinstance(line, list) and len(line) == 3 and isinstance(line[0], str)
            and isinstance(line[1], str) and _integer(line[2]) in QUANTITIES):
        raise EnvelopeError(ErrorCode.MALFORMED, "an item must be [number, name, quantity]")
    return ItemLine(*line)


@dataclass(frozen=True, slots=True)
class IssuerPart:
    """What the card manager's part claims; None where a field is missing or mistyped."""

    names: frozenset[str]
    card_number: str | None
    card_expiry: str | None  # MM/YY
    amount: int | None  # minor units
    holder_name: str | None
    holder_phone: str | None
    payment_type: str | None
    item_numbers: tuple[tuple[str, int], ...] | None  # (item number, quantity)

    @property
    def usable(self) -> bool:
        """Whether there is anything to decide on; an unusable part is declined."""
        return self.amount is not None and self.card_number is not None

    @classmethod
    def read(cls, header: Header, fields: Mapping[str, object]) -> IssuerPart:
        return cls(frozenset(fields), _text(fields, F.CARD_NUMBER), _text(fields, F.CARD_EXPIRY),
                   _integer(fields.get(F.AMOUNT.value)), _text(fields, F.HOLDER_NAME),
                   _text(fields, F.HOLDER_PHONE), _text(fields, F.PAYMENT_TYPE),
                   _item_numbers(fields.get(F.ITEM_NUMBERS.value)))


def _item_numbers(value: object) -> tuple[tuple[str, int], ...] | None:
    if not isinstance(value, list):
        return None
    lines = []
    for line in value:
        if not (isinstance(line, list) and len(line) == 2 and isinstance(line[0], str)
                and _integer(line[1]) is not None):
            return None
        lines.append((line[0], line[1]))
    return tuple(lines)


@dataclass(frozen=True, slots=True)
class DeliveryPart:
    names: frozenset[str]
    destination: str
    recipient: str  # the holder's name, "" when the policy does not grant it
    holder_phone: str | None
    holder_fax: str | None

    @classmethod
    def read(cls, header: Header, fields: Mapping[str, object]) -> DeliveryPart:
        destination = fields.get(F.DESTINATION.value)
        recipient = fields.get(F.HOLDER_NAME.value, "")
        if not isinstance(destination, str) or not destination.strip() \
                or not isinstance(recipient, str):
            raise EnvelopeError(ErrorCode.MALFORMED, "the delivery part has no destination")
        return cls(frozenset(fields), destination, recipient, _text(fields, F.HOLDER_PHONE),
                   _text(fields, F.HOLDER_FAX))


Part = SellerPart | IssuerPart | DeliveryPart


def reader(party: Party, form: OrderForm) -> PartReader[Part]:
    """Party's reader, for code that handles every party's part (tests, vectors, fuzzing)."""
    if party is Party.SELLER:
        return SellerPart.reader(form)
    return IssuerPart.read if party is Party.ISSUER else DeliveryPart.read
