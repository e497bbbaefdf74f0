"""What a conformance check is, and what it yields.

A check is a small named function with the ISO/IEC 7816-4 clause it follows. It returns a
one-line reason on success, raises `NotApplicable` when the card does not offer what it needs
(with the reason), and raises `Failed` when the card answers against the clause.

A failure is the card doing something wrong: executing a command it should refuse, returning
wrong data, changing state. A refusal with another status word than the one the clause
prefers is only a deviation: the check records it (`Probe.deviations`) and goes on, and the
result says which status word came and which was preferred.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from terminal.conformance.probe import Probe
from terminal.conformance.record import Deviation, Exchange
from terminal.conformance.record import Failed as Failed
from terminal.conformance.record import NotApplicable as NotApplicable


class Outcome(Enum):
    PASS = "pass"
    DEVIATION = "deviation"  # refused as it should, with another status word than preferred
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"
    ERROR = "error"  # the check could not finish: the reader or the card went away


CheckFn = Callable[[Probe], str]


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    title: str
    clause: str  # ISO/IEC 7816-4:2005 unless the text names another part or edition
    fn: CheckFn


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: Check
    outcome: Outcome
    reason: str
    seconds: float
    exchanges: tuple[Exchange, ...] = ()
    sw_seen: int | None = None  # the status word that decided a failure or a deviation
    sw_preferred: tuple[int, ...] = ()
    deviations: tuple[Deviation, ...] = ()


REGISTRY: list[Check] = []


def check(id: str, clause: str, title: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check; the registry keeps definition order, which is the run order."""

    def register(fn: CheckFn) -> CheckFn:
        if any(c.id == id for c in REGISTRY):
            raise ValueError(f"duplicate conformance check {id!r}")
        REGISTRY.append(Check(id, title, clause, fn))
        return fn

    return register
