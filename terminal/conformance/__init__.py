"""An ISO/IEC 7816-4 conformance suite for any card behind any Reader.

    report = run_suite(reader, Target(aid=..., pin=..., pin_reference=0x81))

`record` (recorded exchanges, NotApplicable, Failed), `model` (checks and outcomes),
`capabilities` (what the ATR advertises), `probe` (raw APDUs, recorded), `checks` (the
registry, with ISO clauses), `runner`, `report` (JSON, JUnit XML).
"""

from terminal.conformance.model import REGISTRY, Check, CheckResult, Outcome
from terminal.conformance.probe import PinFormat, Target
from terminal.conformance.report import to_json, to_junit, write_report
from terminal.conformance.runner import SuiteReport, run_suite, select_checks

__all__ = ["REGISTRY", "Check", "CheckResult", "Outcome", "PinFormat", "SuiteReport", "Target",
           "run_suite", "select_checks", "to_json", "to_junit", "write_report"]
