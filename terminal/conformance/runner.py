"""Run the registered checks against one reader, each on a freshly reset card."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from terminal.conformance import checks as _checks  # noqa: F401 (registers the checks)
from terminal.conformance.model import (
    REGISTRY,
    Check,
    CheckResult,
    Failed,
    NotApplicable,
    Outcome,
)
from terminal.conformance.probe import Probe, Target
from terminal.errors import ReaderError
from terminal.reader import Reader

#: called after a check lost the card (a crash, a removal): returns a reader with the card
#: back, so the rest of the suite can run; without it the remaining checks are not run
Recover = Callable[[], Reader]


@dataclass
class SuiteReport:
    reader: str
    atr: bytes
    capabilities: str
    target: Target
    started: datetime
    results: list[CheckResult] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome is outcome for r in self.results)

    @property
    def passed(self) -> bool:
        """No check failed (or was cut short); deviations allowed."""
        return self.passes()

    def passes(self, *, strict: bool = False) -> bool:
        """No failure nor error; with `strict`, no deviation either."""
        ok = {Outcome.PASS, Outcome.NOT_APPLICABLE}
        if not strict:
            ok.add(Outcome.DEVIATION)
        return all(r.outcome in ok for r in self.results)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)


def select_checks(ids: Iterable[str] | None = None) -> list[Check]:
    if not ids:
        return list(REGISTRY)
    known = {c.id: c for c in REGISTRY}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValueError(f"unknown check {', '.join(unknown)}; known: {', '.join(known)}")
    wanted = set(ids)
    return [c for c in REGISTRY if c.id in wanted]


def run_suite(reader: Reader, target: Target, *, only: Iterable[str] | None = None,
              recover: Recover | None = None,
              progress: Callable[[CheckResult], None] | None = None) -> SuiteReport:
    chosen = select_checks(only)
    probe = Probe(reader, target)
    try:
        atr = reader.reset()
    except (ReaderError, OSError) as exc:
        raise ReaderError(f"cannot reset the card in {reader.name}: {exc}") from exc
    probe.start()
    report = SuiteReport(reader.name, atr, probe.caps.summary, target,
                         datetime.now(UTC))
    lost: str | None = None
    for chk in chosen:
        if lost is not None:
            result = CheckResult(chk, Outcome.ERROR, f"not run: {lost}", 0.0)
        else:
            result, transport_failed = _run_one(chk, probe)
            if transport_failed:
                lost = f"the card was lost during {chk.id}"
                if recover is not None:
                    try:
                        probe.reader, lost = recover(), None
                    except (ReaderError, OSError) as exc:
                        lost += f" and did not come back ({exc})"
        report.results.append(result)
        if progress is not None:
            progress(result)
    return report


TRACED = (Outcome.FAIL, Outcome.DEVIATION, Outcome.ERROR)  # results that carry their APDUs


def _run_one(chk: Check, probe: Probe) -> tuple[CheckResult, bool]:
    """The check's result, and whether the transport failed (the card may be gone).

    Any other exception is a bug in the check or an answer it did not foresee: an ERROR
    result too, so the suite goes on and the report is still written, but the card is
    still there and the next check's reset is enough.
    """
    start = time.perf_counter()

    def done(outcome: Outcome, reason: str, seen: int | None = None,
             preferred: tuple[int, ...] = ()) -> CheckResult:
        deviations = tuple(probe.deviations)
        if outcome is Outcome.PASS and deviations:
            outcome, seen, preferred = (Outcome.DEVIATION, deviations[0].seen,
                                        deviations[0].preferred)
            reason = "; ".join(["deviation: " + d.render() for d in deviations] + [reason])
        exchanges = tuple(probe.log) if outcome in TRACED else ()
        return CheckResult(chk, outcome, reason, time.perf_counter() - start, exchanges,
                           seen, preferred, deviations)

    probe.check_id = chk.id
    try:
        probe.start()
        return done(Outcome.PASS, chk.fn(probe)), False
    except NotApplicable as exc:
        return done(Outcome.NOT_APPLICABLE, _text(exc)), False
    except Failed as exc:
        return done(Outcome.FAIL, _text(exc), exc.seen, exc.preferred), False
    except (ReaderError, OSError) as exc:
        return done(Outcome.ERROR, f"transport: {type(exc).__name__}: {_text(exc)}"), True
    except Exception as exc:
        return done(Outcome.ERROR, f"internal: {type(exc).__name__}: {_text(exc)}"), False


def _text(exc: BaseException) -> str:
    """The message, with any notes added on the way out (a PIN check's restore outcome)."""
    return "; ".join([str(exc), *getattr(exc, "__notes__", ())])
