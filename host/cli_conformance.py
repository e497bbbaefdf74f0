"""`nettx conformance`: the ISO/IEC 7816-4 suite (terminal/conformance) against any card.

Registered on the main group by one line at the end of host/cli.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from card_applet.apdu import ApduFormatError, CommandApdu
from host.cardaccess import open_card, state_key_options
from host.clikit import (
    PIN,
    PUK,
    console,
    json_option,
    print_json,
    reader_option,
    secret_options,
    state_option,
)
from terminal.conformance import (
    REGISTRY,
    Outcome,
    PinFormat,
    SuiteReport,
    Target,
    run_suite,
    select_checks,
    write_report,
)
from terminal.conformance.probe import pin_block
from terminal.conformance.profiles import NETTX
from terminal.errors import NettxError

STYLE = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.ERROR: "bold red",
         Outcome.NOT_APPLICABLE: "dim"}


def _hex(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return bytes.fromhex(value.replace(" ", "").replace(":", ""))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not hex") from exc


def _apdu(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    raw = _hex(ctx, param, value)
    if raw is not None:
        try:
            CommandApdu.from_bytes(raw)
        except ApduFormatError as exc:
            raise click.BadParameter(f"{value!r} is not a command APDU") from exc
    return raw


def _aid(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    raw = _hex(ctx, param, value)
    if raw is not None and not 5 <= len(raw) <= 16:
        raise click.BadParameter("an AID is 5..16 bytes (ISO/IEC 7816-4 8.2.1.2)")
    return raw


def _byte(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    raw = _hex(ctx, param, value.removeprefix("0x") if value else value)
    if raw is not None and len(raw) != 1:
        raise click.BadParameter(f"{value!r} is not one byte in hex (e.g. 81)")
    return None if raw is None else raw[0]


def _fits_the_pin_block(value: str, ctx: click.Context) -> None:
    """A PIN or PUK that fits the PIN block format VERIFY will carry it in, so that no check
    dies building the block."""
    fmt = ctx.params.get("pin_format") or NETTX.pin_format  # every Target's default
    try:
        pin_block(value, fmt)
    except ValueError as exc:
        raise ValueError(f"{exc} (--pin-format {fmt})") from exc


# optional: the PIN enables the PIN checks, the PUK the blocking check (PIN blocked, then
# unblocked); someone else's card may take up to 12 digits, so the check is the block format's
_PIN = dataclasses.replace(PIN, check=_fits_the_pin_block, optional=True)
_PUK = dataclasses.replace(PUK, check=_fits_the_pin_block, optional=True)


def build_target(aid: bytes | None, pin: str | None, puk: str | None, pin_ref: int | None,
                 pin_format: str | None, protected: bytes | None) -> Target:
    """Our card's facts by default; any other AID starts from nothing but what is given."""
    base = NETTX if aid is None or aid == NETTX.aid else Target(aid=aid)
    return dataclasses.replace(
        base, pin=pin, puk=puk,
        pin_reference=base.pin_reference if pin_ref is None else pin_ref,
        pin_format=pin_format or base.pin_format,
        protected=base.protected if protected is None else protected)


def results_table(report: SuiteReport) -> Table:
    table = Table(title=f"ISO/IEC 7816-4 conformance: {report.reader}",
                  caption=f"ATR {report.atr.hex(' ').upper()}  |  {report.capabilities}",
                  caption_justify="left")
    table.add_column("check")
    table.add_column("7816-4 clause")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for r in report.results:
        table.add_row(r.check.id, r.check.clause,
                      Text(r.outcome.value, style=STYLE[r.outcome]), r.reason)
    return table


def summary_json(report: SuiteReport, report_path: Path | None) -> dict[str, object]:
    return {"reader": report.reader, "atr": report.atr.hex().upper(),
            "capabilities": report.capabilities, "passed": report.passed,
            "counts": {o.value: report.count(o) for o in Outcome},
            "results": [{"check": r.check.id, "clause": r.check.clause,
                         "outcome": r.outcome.value, "reason": r.reason}
                        for r in report.results],
            "report": None if report_path is None else str(report_path)}


@click.command("conformance")
@reader_option
@state_option(help="Card EEPROM file: start this card on the embedded reader instead.")
@state_key_options
@click.option("--aid", callback=_aid, metavar="HEX",
              help="Application to test (default: the nettx applet, with its PIN reference "
                   "and protected command).")
@secret_options(_PIN, _PUK)
@click.option("--pin-ref", callback=_byte, metavar="HEX",
              help="VERIFY P2, the PIN reference, one byte in hex (nettx: 81).")
@click.option("--pin-format", type=click.Choice(PinFormat.ALL), default=None, is_eager=True,
              help="How VERIFY carries the PIN (default and nettx: ascii-ff).")
@click.option("--protected", callback=_apdu, metavar="APDU",
              help="Hex command APDU that needs the PIN verified (for security-status).")
@click.option("--check", "only", multiple=True, metavar="ID", help="Run only these checks.")
@click.option("--list", "list_checks", is_flag=True, help="List the checks and exit.")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="Write the results: JUnit XML if FILE ends in .xml, JSON otherwise.")
@json_option
def conformance(reader_spec: str | None, state: Path | None, aid: bytes | None,
                pin: str | None, puk: str | None, pin_ref: int | None, pin_format: str | None,
                protected: bytes | None, only: tuple[str, ...], list_checks: bool,
                report_path: Path | None, as_json: bool) -> None:
    """Run the ISO/IEC 7816-4 conformance suite against the card in a reader.

    Each check is one behaviour of one clause; it passes, fails, or is not applicable (the
    card does not offer the feature, or an option it needs is missing). The exit status is
    0 when every applicable check passed, 1 otherwise.

    The right PIN enables the PIN checks, the PUK the blocking check (the PIN is blocked,
    then unblocked). Neither is an argument: NETTX_PIN / NETTX_PUK, --pin-file / --puk-file,
    --pin-fd / --puk-fd, or --ask-pin / --ask-puk for a hidden prompt.
    """
    from host.cli import CliFail  # host.cli registers this command: import it late

    if list_checks:
        if as_json:
            print_json({"checks": [{"check": c.id, "clause": c.clause, "what": c.title}
                                   for c in REGISTRY]})
            return
        table = Table("check", "7816-4 clause", "what")
        for c in REGISTRY:
            table.add_row(c.id, c.clause, c.title)
        console.print(table)
        return
    try:
        select_checks(only)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--check") from exc
    target = build_target(aid, pin, puk, pin_ref, pin_format, protected)
    try:
        with open_card(reader_spec, state) as reader:
            report = run_suite(reader, target, only=only)
        if report_path is not None:
            write_report(report, report_path)
    except (NettxError, OSError) as exc:
        raise CliFail(str(exc)) from exc
    if as_json:
        print_json(summary_json(report, report_path))
        if not report.passed:
            raise SystemExit(1)
        return
    console.print(results_table(report))
    totals = ", ".join(f"{report.count(o)} {o.value}" for o in Outcome)
    console.print(f"{totals}: {'all applicable checks passed' if report.passed else 'FAILED'}")
    if report_path is not None:
        console.print(f"report written to {report_path}")
    if not report.passed:
        raise SystemExit(1)
