"""The seller's next step as pure functions (host.parties.lifecycle): every status, every
answer, and every path an order can take checked against the order book's transition table,
without sockets, keys or a database."""

from __future__ import annotations

import pytest

from host.parties.lifecycle import (
    OVERDUE,
    OVERDUE_UNSENT,
    Answered,
    Authorise,
    Authorised,
    Cancelled,
    Deliver,
    Event,
    Finish,
    Refused,
    Sent,
    Shipped,
    Step,
    Void,
    advance,
    next_step,
)
from host.storage.order_book import TRANSITIONS, OrderStatus

S = OrderStatus
MAC, RECEIPT = b"m" * 33, b"r" * 40


def authorised(code: str = "approved", amount: int = 4_900,
               reason: str = "approved") -> Authorised:
    return Authorised(code, reason, amount, 4_900, MAC, RECEIPT)


NEXT: list[tuple[OrderStatus, bool, str | None, Step]] = [
    (S.RECEIVED, False, None, Authorise(mark=True)),
    (S.AUTHORISING, False, None, Authorise(mark=False)),
    (S.APPROVED, False, None, Deliver()),
    (S.VOIDING, False, "forged: the card manager: no", Void("forged: the card manager: no",
                                                            mark=False)),
    (S.VOIDING, False, None, Void("voided", mark=False)),
    (S.RECEIVED, True, None, Finish(S.FAILED, OVERDUE_UNSENT)),
    (S.AUTHORISING, True, None, Void(OVERDUE, mark=True)),
    (S.APPROVED, True, None, Void(OVERDUE, mark=True)),
    (S.VOIDING, True, "earlier", Void("earlier", mark=False)),
    *[(final, overdue, None, Answered()) for final in (S.COMPLETED, S.DECLINED, S.FAILED)
      for overdue in (False, True)],
]


@pytest.mark.parametrize(("status", "overdue", "note", "expected"), NEXT)
def test_next_step(status: OrderStatus, overdue: bool, note: str | None,
                   expected: Step) -> None:
    assert next_step(status, overdue=overdue, note=note) == expected


ADVANCE: list[tuple[Sent, Event, OrderStatus, Step]] = [
    (Authorise(True), authorised(), S.AUTHORISING, Deliver(approval=(MAC, RECEIPT))),
    (Authorise(False), authorised("declined", reason="declined by the card manager"),
     S.AUTHORISING, Finish(S.DECLINED, "declined by the card manager")),
    (Authorise(True), authorised(amount=1), S.AUTHORISING,
     Void("amount: the card manager approved 1, the order is for 4900", mark=True)),
    # refused before the request left (confirmation failed): still RECEIVED, nothing to void
    (Authorise(True), Refused("unconfirmed: the issuer: no"), S.RECEIVED,
     Finish(S.FAILED, "unconfirmed: the issuer: no")),
    # refused once it left: a debit may exist
    (Authorise(True), Refused("forged: bad MAC"), S.AUTHORISING,
     Void("forged: bad MAC", mark=True)),
    (Deliver(), Shipped(), S.APPROVED, Finish(S.COMPLETED, "approved and shipped")),
    (Deliver((MAC, RECEIPT)), Refused("replay: the delivery: seen"), S.APPROVED,
     Void("replay: the delivery: seen", mark=True)),
    (Void("why", mark=True), Cancelled("reversed"), S.VOIDING,
     Finish(S.FAILED, "why; card manager: reversed, no charge stands")),
    (Void("why", mark=False), Cancelled("voided"), S.VOIDING,
     Finish(S.FAILED, "why; card manager: voided, no charge stands")),
    (Void("why", mark=False), Refused("forged: x"), S.VOIDING,
     Finish(S.FAILED, "why; the charge could not be cancelled (forged: x): "
                      "contact the card manager")),
]


@pytest.mark.parametrize(("step", "event", "status", "expected"), ADVANCE)
def test_advance(step: Sent, event: Event, status: OrderStatus, expected: Step) -> None:
    assert advance(step, event, status) == expected


@pytest.mark.parametrize(("step", "event"), [
    (Authorise(True), Shipped()), (Authorise(True), Cancelled("reversed")),
    (Deliver(), authorised()), (Deliver(), Cancelled("reversed")),
    (Void("x", mark=True), Shipped()), (Void("x", mark=True), authorised())])
def test_an_answer_to_another_step_is_an_error(step: Sent, event: Event) -> None:
    with pytest.raises(ValueError, match="does not answer"):
        advance(step, event, S.AUTHORISING)


# -- every path, against the transition table ---------------------------------------------------

def answers(step: Sent) -> list[tuple[Event, bool]]:
    """What a peer may answer to `step`, and whether the step's own move was made first."""
    if isinstance(step, Authorise):
        return [(authorised(), True), (authorised(amount=1), True),
                (authorised("declined"), True), (Refused("before send"), False),
                (Refused("after send"), True)]
    if isinstance(step, Deliver):
        return [(Shipped(), True), (Refused("refused"), True)]
    return [(Cancelled("reversed"), True), (Refused("refused"), True)]


def own_move(step: Sent) -> OrderStatus | None:
    if isinstance(step, Authorise):
        return S.AUTHORISING if step.mark else None
    if isinstance(step, Deliver):
        return S.APPROVED if step.approval is not None else None
    return S.VOIDING if step.mark else None


def walk(status: OrderStatus, step: Step, path: tuple[str, ...], ends: set[OrderStatus]) -> None:
    """Follow every answer from `step` at `status`, making each move as the driver would."""
    assert len(path) < 10, f"no end: {path}"
    if isinstance(step, Finish):
        assert legal_move(status, step.status, path)
        ends.add(step.status)
        return
    assert not isinstance(step, Answered)
    for event, moved in answers(step):
        now = status
        target = own_move(step)
        if moved and target is not None:
            assert legal_move(now, target, path)
            now = target
        walk(now, advance(step, event, now), (*path, f"{type(event).__name__} at {now}"), ends)


def legal_move(old: OrderStatus, new: OrderStatus, path: tuple[str, ...]) -> bool:
    assert new in TRANSITIONS[old], f"{old} -> {new} after {path}"
    return True


@pytest.mark.parametrize("status", [S.RECEIVED, S.AUTHORISING, S.APPROVED, S.VOIDING])
@pytest.mark.parametrize("overdue", [False, True])
def test_every_path_moves_only_along_the_table_and_ends(status: OrderStatus,
                                                        overdue: bool) -> None:
    ends: set[OrderStatus] = set()
    walk(status, next_step(status, overdue=overdue, note=None), (str(status),), ends)
    assert ends and all(end.final for end in ends)
    if status is S.RECEIVED and not overdue:
        assert ends == {S.COMPLETED, S.DECLINED, S.FAILED}
    if status in (S.APPROVED, S.VOIDING) or overdue:
        assert S.DECLINED not in ends  # a decline is only ever the card manager's answer
