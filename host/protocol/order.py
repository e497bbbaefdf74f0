"""The order form, the partition policy and the order itself (EP 0791901, FIG. 2 and 3).

The seller publishes an `OrderForm`: its catalogue, the identifiers of the three parties and
the `PartitionPolicy` saying which order field goes to which party. The holder's terminal
fills in an `Order` and `split`s it into one part per party. The policy is data and is
validated on both sides: a form that hands the card number to the seller, or the destination
to the card manager, is refused unless the policy marks that grant explicitly.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from card_applet import blom
from host.errors import OrderError, PolicyError, WireError
from host.protocol import codec
from host.protocol.codec import Fields


class Party(enum.StrEnum):
    SELLER = "seller"
    ISSUER = "issuer"  # the card manager
    DELIVERY = "delivery"


class OrderField(enum.StrEnum):
    HOLDER_NAME = "holder_name"
    HOLDER_ADDRESS = "holder_address"
    HOLDER_PHONE = "holder_phone"
    HOLDER_FAX = "holder_fax"
    ITEMS = "items"  # item number, name, quantity
    ITEM_NUMBERS = "item_numbers"  # item number and quantity only
    AMOUNT = "amount"
    PAYMENT_TYPE = "payment_type"
    CARD_NUMBER = "card_number"
    CARD_EXPIRY = "card_expiry"
    DESTINATION = "destination"


F = OrderField
HOLDER_CONTACT = (F.HOLDER_NAME, F.HOLDER_ADDRESS, F.HOLDER_PHONE, F.HOLDER_FAX)

# The patent's split: the seller never learns how the holder pays, the card manager never
# learns what is bought or where it goes, the delivery company never learns either.
DEFAULT_GRANTS: dict[Party, frozenset[OrderField]] = {
    Party.SELLER: frozenset((*HOLDER_CONTACT, F.ITEMS, F.AMOUNT, F.PAYMENT_TYPE)),
    Party.ISSUER: frozenset((*HOLDER_CONTACT, F.CARD_NUMBER, F.CARD_EXPIRY, F.ITEM_NUMBERS,
                             F.AMOUNT, F.PAYMENT_TYPE)),
    Party.DELIVERY: frozenset((F.HOLDER_NAME, F.HOLDER_PHONE, F.HOLDER_FAX, F.DESTINATION)),
}

# Who may see a sensitive field without an explicit mark in the policy.
SENSITIVE_OWNERS: dict[OrderField, frozenset[Party]] = {
    F.CARD_NUMBER: frozenset({Party.ISSUER}),
    F.CARD_EXPIRY: frozenset({Party.ISSUER}),
    F.DESTINATION: frozenset({Party.DELIVERY}),
}

# What each party cannot do its job without.
REQUIRED: dict[Party, frozenset[OrderField]] = {
    Party.SELLER: frozenset({F.ITEMS, F.AMOUNT}),
    Party.ISSUER: frozenset({F.CARD_NUMBER, F.CARD_EXPIRY, F.AMOUNT}),
    Party.DELIVERY: frozenset({F.DESTINATION}),
}


@dataclass(frozen=True, slots=True)
class PartitionPolicy:
    grants: Mapping[Party, frozenset[OrderField]]
    #: (field, party) grants of a sensitive field outside its owner, accepted knowingly
    exposures: frozenset[tuple[OrderField, Party]] = frozenset()
    #: `digest()`, computed once: every order's header carries it, and both the holder and
    #: the seller compare it per order
    _digest: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "_digest", hashlib.sha256(
            b"nettx/policy/v1" + codec.encode(self.to_cbor())).digest())

    def validate(self) -> None:
        if set(self.grants) != set(Party):
            raise PolicyError("the policy must name exactly the seller, issuer and delivery")
        for party, fields in self.grants.items():
            missing = REQUIRED[party] - fields
            if missing:
                raise PolicyError(f"{party} cannot work without {', '.join(sorted(missing))}")
            for f in fields:
                owners = SENSITIVE_OWNERS.get(f)
                if owners is not None and party not in owners \
                        and (f, party) not in self.exposures:
                    raise PolicyError(f"the policy hands {f} to the {party}: refused unless "
                                      f"marked as an exposure")
        for f, party in self.exposures:
            if f not in self.grants[party]:
                raise PolicyError(f"exposure of {f} to {party} marked but not granted")

    def fields_for(self, party: Party) -> frozenset[OrderField]:
        return self.grants[party]

    def to_cbor(self) -> dict[str, Any]:
        return {
            "grants": {p.value: sorted(f.value for f in fs) for p, fs in self.grants.items()},
            "exposures": sorted([f.value, p.value] for f, p in self.exposures),
        }

    @classmethod
    def from_cbor(cls, value: Any) -> PartitionPolicy:
        m = Fields(value, "policy")
        try:
            grants = {Party(p): frozenset(OrderField(f) for f in fs)
                      for p, fs in m.get("grants", dict).items()}
            exposures = frozenset((OrderField(f), Party(p))
                                  for f, p in m.get("exposures", list, max_size=64))
        except (ValueError, TypeError) as exc:
            raise WireError(f"policy: {exc}") from exc
        return cls(grants, exposures)

    def digest(self) -> bytes:
        return self._digest


DEFAULT_POLICY = PartitionPolicy(DEFAULT_GRANTS)


def check_role(identifier: str, role: str) -> str:
    """Identifiers carry their role (`seller:...`, `issuer:...`, `delivery:...`,
    `holder:...`): a seller's form cannot pass a holder's identifier off as a card manager."""
    try:
        blom.identifier_bytes(identifier)
    except blom.IdentifierError as exc:
        raise ValueError(f"{role} identifier {identifier!r}: {exc}") from exc
    if not identifier.startswith(f"{role}:") or identifier == f"{role}:":
        raise ValueError(f"{identifier!r} is not a {role} identifier ({role}:...)")
    return identifier


#: how many of one item a line may order: the holder's terminal and the seller check the same
QUANTITIES = range(1, 1001)


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    number: str
    name: str
    unit_price: int  # minor units of the form's currency


@dataclass(frozen=True, slots=True)
class OrderForm:
    seller: str
    issuer: str
    delivery: str
    currency: str
    catalogue: tuple[CatalogueItem, ...]
    policy: PartitionPolicy = DEFAULT_POLICY

    def __post_init__(self) -> None:
        ids = (self.seller, self.issuer, self.delivery)
        for role, ident in zip(Party, ids, strict=True):
            try:
                check_role(ident, role.value)
            except ValueError as exc:
                raise PolicyError(str(exc)) from exc
        if len(set(ids)) != 3:
            raise PolicyError("seller, issuer and delivery must be three different parties")
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise PolicyError(f"currency {self.currency!r} is not an ISO 4217 code")
        numbers = [item.number for item in self.catalogue]
        if not numbers or len(set(numbers)) != len(numbers):
            raise PolicyError("the catalogue is empty or repeats an item number")
        if any(item.unit_price <= 0 for item in self.catalogue):
            raise PolicyError("catalogue prices must be positive")

    def party_id(self, party: Party) -> str:
        return {Party.SELLER: self.seller, Party.ISSUER: self.issuer,
                Party.DELIVERY: self.delivery}[party]

    def item(self, number: str) -> CatalogueItem:
        for item in self.catalogue:
            if item.number == number:
                return item
        raise OrderError(f"item {number!r} is not in {self.seller}'s catalogue")

    def price(self, lines: Iterable[tuple[str, int]]) -> int:
        """What (item number, quantity) lines cost, in minor units: the amount the holder
        approves and the seller checks its part against (OrderError for an unknown item)."""
        return sum(self.item(number).unit_price * qty for number, qty in lines)

    def to_cbor(self) -> dict[str, Any]:
        return {
            "seller": self.seller, "issuer": self.issuer, "delivery": self.delivery,
            "currency": self.currency, "policy": self.policy.to_cbor(),
            "catalogue": [[i.number, i.name, i.unit_price] for i in self.catalogue],
        }

    @classmethod
    def from_cbor(cls, value: Any) -> OrderForm:
        m = Fields(value, "order form")
        catalogue = []
        for entry in m.get("catalogue", list, min_size=1, max_size=1000):
            if not (isinstance(entry, list) and len(entry) == 3
                    and isinstance(entry[0], str) and isinstance(entry[1], str)
                    and isinstance(entry[2], int) and not isinstance(entry[2], bool)):
                raise WireError("order form: a catalogue entry must be [number, name, price]")
            catalogue.append(CatalogueItem(*entry))
        return cls(
            seller=m.get("seller", str), issuer=m.get("issuer", str),
            delivery=m.get("delivery", str), currency=m.get("currency", str),
            catalogue=tuple(catalogue), policy=PartitionPolicy.from_cbor(m.map.get("policy")),
        )


PAYMENT_TYPE = re.compile(r"full|instalments:([2-9]|[1-2][0-9]|3[0-6])")


@dataclass(frozen=True, slots=True)
class Order:
    """What the holder fills in. `lines` are (item number, quantity)."""

    holder_name: str
    holder_address: str
    holder_phone: str
    card_number: str
    card_expiry: str  # MM/YY
    destination: str
    lines: tuple[tuple[str, int], ...]
    holder_fax: str = ""
    payment_type: str = "full"

    def __post_init__(self) -> None:
        if not self.lines:
            raise OrderError("an order needs at least one item")
        if any(qty not in QUANTITIES for _, qty in self.lines):
            raise OrderError(f"quantities must be {QUANTITIES.start}..{QUANTITIES.stop - 1}")
        if not re.fullmatch(r"\d{12,19}", self.card_number):
            raise OrderError("the card number must be 12..19 digits")
        if not re.fullmatch(r"(0[1-9]|1[0-2])/\d\d", self.card_expiry):
            raise OrderError("the expiry must be MM/YY")
        if not PAYMENT_TYPE.fullmatch(self.payment_type):
            raise OrderError("payment type must be 'full' or 'instalments:N' (N 2..36)")
        for name in ("holder_name", "destination"):
            if not getattr(self, name).strip():
                raise OrderError(f"{name.replace('_', ' ')} is empty")

    def amount(self, form: OrderForm) -> int:
        return form.price(self.lines)

    def field_values(self, form: OrderForm) -> dict[OrderField, Any]:
        items = [[n, form.item(n).name, q] for n, q in self.lines]
        return {
            F.HOLDER_NAME: self.holder_name, F.HOLDER_ADDRESS: self.holder_address,
            F.HOLDER_PHONE: self.holder_phone, F.HOLDER_FAX: self.holder_fax,
            F.ITEMS: items, F.ITEM_NUMBERS: [[n, q] for n, q in self.lines],
            F.AMOUNT: self.amount(form), F.PAYMENT_TYPE: self.payment_type,
            F.CARD_NUMBER: self.card_number, F.CARD_EXPIRY: self.card_expiry,
            F.DESTINATION: self.destination,
        }


def split(order: Order, form: OrderForm) -> dict[Party, dict[str, Any]]:
    """One field map per party, exactly as the form's policy grants."""
    values = order.field_values(form)
    return {party: {f.value: values[f] for f in sorted(form.policy.fields_for(party))}
            for party in Party}


def parse_lines(specs: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """`NUMBER:QTY` (QTY defaults to 1), as `nettx buy --item` takes them."""
    lines = []
    for spec in specs:
        number, _, qty = spec.partition(":")
        if not number or (qty and not re.fullmatch(r"[0-9]{1,4}", qty)):
            raise OrderError(f"--item {spec!r}: expected NUMBER[:QTY]")
        lines.append((number, int(qty or 1)))
    return tuple(lines)


def load_catalogue(entries: Sequence[Mapping[str, Any]]) -> tuple[CatalogueItem, ...]:
    try:
        return tuple(CatalogueItem(str(e["number"]), str(e["name"]), int(e["unit_price"]))
                     for e in entries)
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"catalogue entry needs number, name, unit_price ({exc})") from exc
