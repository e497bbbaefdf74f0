"""Amounts as people read them: minor units of an ISO 4217 currency <-> "27.90 EUR".

The wire carries integers in minor units (docs/protocol.md, section 2); whatever a holder is
asked to approve, or types as a ceiling, is money with its currency and its decimals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from host.errors import OrderError

# ISO 4217 currencies whose minor unit is not the cent; every other code has 2 decimals.
_EXPONENTS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                     "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


@dataclass(frozen=True, slots=True)
class Money:
    minor: int  # minor units: 2790 is 27.90 EUR
    currency: str

    def __str__(self) -> str:
        digits = exponent(self.currency)
        sign = "-" if self.minor < 0 else ""
        whole, part = divmod(abs(self.minor), 10**digits)
        return f"{sign}{whole}.{part:0{digits}d} {self.currency}" if digits \
            else f"{sign}{whole} {self.currency}"

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """`27.90` or `27.90 EUR`, in `currency`; refuses another currency and more decimals
        than the currency has (27.905 EUR is no amount)."""
        match = re.fullmatch(r"\s*(\d{1,16}(?:\.\d{1,3})?)\s*([A-Z]{3})?\s*", text)
        if match is None:
            raise OrderError(f"{text!r} is not an amount (e.g. 27.90 or 27.90 {currency})")
        if match[2] is not None and match[2] != currency:
            raise OrderError(f"the amount {text!r} is in {match[2]}; the seller's form is in "
                             f"{currency}")
        try:
            value = Decimal(match[1]).scaleb(exponent(currency))
        except InvalidOperation as exc:
            raise OrderError(f"{text!r} is not an amount") from exc
        if value != value.to_integral_value():
            raise OrderError(f"{text!r} has more decimals than {currency} has")
        return cls(int(value), currency)
