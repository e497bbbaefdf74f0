"""The seller's next step for an order, as pure functions: from the status the order book
holds (and whether the order is overdue), what to do now; from what the peer answered, what
to do next. The seller's driver (host.parties.seller) only performs the steps: the network,
the key module and the order book's moves. The statuses and the moves the book allows are
host.storage.order_book's (its theory of operation says what each one means).

    RECEIVED ──Authorise──▶ AUTHORISING ──Authorised(approved)──▶ APPROVED ──Deliver──▶ COMPLETED
       │ refused before          │ Authorised(declined) ──▶ DECLINED
       │ anything left           │ refused, bad MAC, other amount, overdue
       ▼                         ▼
     FAILED ◀──Cancelled/Refused── VOIDING ◀── (from APPROVED too)
"""

from __future__ import annotations

from dataclasses import dataclass

from host.storage.order_book import OrderStatus

S = OrderStatus

OVERDUE_UNSENT = "the card manager could not be reached in time"
OVERDUE = "not completed in time"


# -- steps: what the driver does next ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authorise:
    """Send the card manager's part; `mark`: record AUTHORISING first, once the card manager
    passed confirmation and just before the request leaves (from then on a debit may exist)."""

    mark: bool


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send the delivery part with the authorisation MAC. `approval` (MAC, receipt): the one
    just verified, to record with APPROVED first; None: the one the book recorded."""

    approval: tuple[bytes, bytes] | None = None


@dataclass(frozen=True, slots=True)
class Void:
    """Have the card manager cancel any charge; `mark`: record VOIDING (with `reason` as its
    note) first."""

    reason: str
    mark: bool


@dataclass(frozen=True, slots=True)
class Finish:
    """Record the final status with the holder's outcome, and answer."""

    status: OrderStatus
    reason: str


@dataclass(frozen=True, slots=True)
class Answered:
    """Already final: the recorded outcome is the answer."""


Step = Authorise | Deliver | Void | Finish | Answered
Sent = Authorise | Deliver | Void  # the steps that go over the network and get an answer


# -- events: what the peer answered, its MAC verified ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Authorised:
    """The card manager's authorisation for `amount`; the order is for `ordered`."""

    code: str
    reason: str
    amount: int
    ordered: int
    mac: bytes
    receipt: bytes


@dataclass(frozen=True, slots=True)
class Shipped:
    """The delivery company's answer."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The card manager's answer to `reverse`: `code` (reversed, voided, declined) and no
    charge stands."""

    code: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A final refusal, or an answer that did not verify: not worth retrying. (A peer that
    cannot be reached is no event: the order stays where it is, to be driven again.)"""

    reason: str


Event = Authorised | Shipped | Cancelled | Refused


def next_step(status: OrderStatus, *, overdue: bool, note: str | None) -> Step:
    """What to do with an order found at `status`."""
    if status.final:
        return Answered()
    if overdue and status is S.RECEIVED:
        return Finish(S.FAILED, OVERDUE_UNSENT)  # nothing left: no charge to cancel
    if overdue and status is not S.VOIDING:
        return Void(OVERDUE, mark=True)
    if status is S.VOIDING:
        return Void(note or "voided", mark=False)
    if status is S.APPROVED:
        return Deliver()
    return Authorise(mark=status is S.RECEIVED)


def advance(step: Sent, event: Event, status: OrderStatus) -> Deliver | Void | Finish:
    """What to do after `step` was answered with `event`; `status` is the order's status as
    the book holds it now (a refusal may come before or after the step's own move)."""
    if isinstance(step, Void):
        if isinstance(event, Cancelled):
            return Finish(S.FAILED, f"{step.reason}; card manager: {event.code}, "
                                    f"no charge stands")
        if isinstance(event, Refused):
            # the card manager will not (or cannot be shown to) cancel: say so, do not loop
            return Finish(S.FAILED, f"{step.reason}; the charge could not be cancelled "
                                    f"({event.reason}): contact the card manager")
    elif isinstance(event, Refused):
        if status is S.RECEIVED:
            # nothing ever left for the card manager, so there is no charge to cancel
            return Finish(S.FAILED, event.reason)
        return Void(event.reason, mark=True)
    elif isinstance(step, Authorise) and isinstance(event, Authorised):
        if event.code != "approved":
            return Finish(S.DECLINED, event.reason)
        if event.amount != event.ordered:
            return advance(step, Refused(f"amount: the card manager approved {event.amount}, "
                                         f"the order is for {event.ordered}"), status)
        return Deliver(approval=(event.mac, event.receipt))
    elif isinstance(step, Deliver) and isinstance(event, Shipped):
        return Finish(S.COMPLETED, "approved and shipped")
    raise ValueError(f"{type(event).__name__} does not answer {type(step).__name__}")
