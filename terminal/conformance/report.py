"""Report files: JSON (for programs) and JUnit XML (for CI dashboards).

JUnit mapping: a check is a testcase named by its id, classname `iso7816-4.<clause>`; fail is
<failure>, error is <error>, not applicable is <skipped> with the reason; a deviation passes
with its reason in <system-out>, or is a <failure type="deviation"> under `strict`.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from terminal.conformance.model import Outcome
from terminal.conformance.runner import SuiteReport


def _sw(sw: int | None) -> str | None:
    return None if sw is None else f"{sw:04X}"


def to_dict(report: SuiteReport, *, strict: bool = False) -> dict[str, object]:
    t = report.target
    return {
        "suite": "nettx ISO/IEC 7816-4 conformance",
        "reader": report.reader,
        "atr": report.atr.hex().upper(),
        "capabilities": report.capabilities,
        "target": {"aid": t.aid.hex().upper() if t.aid else None,
                   "pin_reference": t.pin_reference, "pin_format": t.pin_format,
                   "pin_given": t.pin is not None, "puk_given": t.puk is not None,
                   "protected": t.protected.hex().upper() if t.protected else None},
        "started": report.started.isoformat(),
        "strict": strict,
        "passed": report.passes(strict=strict),
        "totals": {o.value: report.count(o) for o in Outcome},
        "failures": [r.check.id for r in report.results if r.outcome is Outcome.FAIL],
        "deviations": [r.check.id for r in report.results if r.outcome is Outcome.DEVIATION],
        "checks": [{"id": r.check.id, "title": r.check.title, "clause": r.check.clause,
                    "outcome": r.outcome.value, "reason": r.reason,
                    "sw_seen": _sw(r.sw_seen),
                    "sw_preferred": [f"{w:04X}" for w in r.sw_preferred],
                    "deviations": [{"what": d.what, "sw_seen": f"{d.seen:04X}",
                                    "sw_preferred": [f"{w:04X}" for w in d.preferred]}
                                   for d in r.deviations],
                    "seconds": round(r.seconds, 6),
                    "exchanges": [e.render() for e in r.exchanges]}
                   for r in report.results],
    }


def to_json(report: SuiteReport, *, strict: bool = False) -> str:
    return json.dumps(to_dict(report, strict=strict), indent=2)


def to_junit(report: SuiteReport, *, strict: bool = False) -> str:
    suite = ET.Element("testsuite", {
        "name": f"iso7816-4 conformance ({report.reader})",
        "tests": str(len(report.results)),
        "failures": str(report.count(Outcome.FAIL)
                        + (report.count(Outcome.DEVIATION) if strict else 0)),
        "errors": str(report.count(Outcome.ERROR)),
        "skipped": str(report.count(Outcome.NOT_APPLICABLE)),
        "time": f"{report.seconds:.3f}",
        "timestamp": report.started.isoformat(timespec="seconds"),
    })
    props = ET.SubElement(suite, "properties")
    for name, value in (("reader", report.reader), ("atr", report.atr.hex().upper()),
                        ("capabilities", report.capabilities)):
        ET.SubElement(props, "property", {"name": name, "value": value})
    for r in report.results:
        case = ET.SubElement(suite, "testcase", {
            "name": f"{r.check.id}: {r.check.title}",
            "classname": f"iso7816-4.{r.check.clause.split(';')[0].split(' ')[0]}",
            "time": f"{r.seconds:.6f}",
        })
        trace = "\n".join(e.render() for e in r.exchanges)
        if r.outcome is Outcome.FAIL:
            ET.SubElement(case, "failure", {"message": r.reason}).text = trace
        elif r.outcome is Outcome.DEVIATION and strict:
            ET.SubElement(case, "failure", {"message": r.reason, "type": "deviation"}).text = trace
        elif r.outcome is Outcome.ERROR:
            ET.SubElement(case, "error", {"message": r.reason}).text = trace
        elif r.outcome is Outcome.NOT_APPLICABLE:
            ET.SubElement(case, "skipped", {"message": r.reason})
        else:
            ET.SubElement(case, "system-out").text = r.reason
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_report(report: SuiteReport, path: Path, *, strict: bool = False) -> str:
    """JUnit XML for a .xml file, JSON otherwise; returns the format written."""
    if path.suffix.lower() == ".xml":
        path.write_text(to_junit(report, strict=strict))
        return "junit"
    path.write_text(to_json(report, strict=strict))
    return "json"
