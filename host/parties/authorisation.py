"""The card manager's rules: whether to approve an authorisation request, as a pure function
of what the request claims and what the ledger knows (host.storage.ledger gathers those facts
and applies the decision in the transaction that debits).

The checks run in a fixed order, and the first that fails gives the decline's reason (which
only the holder's sealed receipt carries: host.parties.issuer). The holder is authenticated
twice: by its card (only it could seal the part) and against the account it claims (card
number bound to its identifier, expiry date, name, phone).
"""

from __future__ import annotations

from dataclasses import dataclass

from card_applet.vocabulary import ATC_BLOCK
from host.storage.ledger import AuthorisationRequest, Decision, Facts

MAX_AMOUNT = 2**53  # minor units; beyond any order, and exact in every peer's numbers

# Counters may arrive out of order (two sellers, a pending order retried after a newer one);
# a value seen twice, or far below the highest seen, is what a cloned card produces. A card
# reserves its counter in blocks of ATC_BLOCK and skips the rest of a block when it restarts,
# so a jump up is no sign of a clone, and two boxes sealed one after the other across a restart
# are at most ATC_BLOCK apart: the window is 8 blocks (256), so an order overtaken by orders
# sealed across up to 7 restarts of the card still passes. A clone is caught as before: a
# copy of the card's state starts from the same reservation as the card, and repeats its values.
ATC_WINDOW = 8 * ATC_BLOCK

# Declines per holder identifier before the card manager stops evaluating (an enumeration of
# card numbers, expiry dates or names costs one decline per guess): at most MAX_DECLINES
# evaluated declines in the ledger's window (host.storage.ledger.DECLINE_WINDOW seconds);
# beyond, a request is declined unread.
MAX_DECLINES = 5
RATE_LIMITED = "too many declines for this card holder: try again later"
INVALID = "the order lacks a valid amount or card number"


@dataclass(frozen=True, slots=True)
class Limits:
    max_declines: int = MAX_DECLINES
    atc_window: int = ATC_WINDOW
    max_amount: int = MAX_AMOUNT


def decide(request: AuthorisationRequest, facts: Facts, limits: Limits = Limits()) -> Decision:
    """The card manager's decision on a new request."""
    amount, card_number = request.amount, request.card_number
    if amount is None or not 0 < amount <= limits.max_amount or card_number is None:
        return Decision("declined", INVALID, 0, request.digest)

    def decline(reason: str) -> Decision:
        return Decision("declined", reason, amount, request.digest, card_number=card_number)

    if facts.declines >= limits.max_declines:
        # not evaluated: the answer says nothing about this card number
        return Decision("declined", RATE_LIMITED, amount, request.digest, evaluated=False)
    account = facts.account
    if account is None:
        return decline("unknown card number")
    if account.holder != request.holder:
        return decline("the card number does not belong to this card holder")
    if request.expiry != account.expiry:
        return decline("wrong expiry date")
    if request.name != account.name:
        return decline("the name does not match the account")
    if account.phone and request.phone != account.phone:
        return decline("the phone number does not match the account")
    if account.blocked:
        return decline("the card is blocked")
    atc, highest = request.atc, facts.counters.highest
    if facts.counters.seen:
        return decline(f"card transaction counter {atc} seen before: a cloned card")
    if highest is not None and atc + limits.atc_window <= highest:
        return decline(f"card transaction counter {atc} far below {highest}: a cloned card")
    if account.balance < amount:
        return decline("insufficient funds")
    return Decision("approved", "approved", amount, request.digest, card_number=card_number)
