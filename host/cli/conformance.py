"""`nettx conformance`: the ISO/IEC 7816-4 suite (terminal/conformance) against any card.

Registered on the main group by one line at the end of host/cli/main.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import time
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from card_applet.apdu import ApduFormatError, CommandApdu, ResponseApdu
from host.cli.cardaccess import open_card, state_key_options
from host.cli.kit import (
    PIN,
    PUK,
    CliFail,
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
from terminal.conformance.probe import executed, pin_block
from terminal.conformance.profiles import NETTX
from terminal.conformance.runner import Recover
from terminal.errors import NettxError, ReaderError
from terminal.reader import Reader
from terminal.readers import open_reader

STYLE = {Outcome.PASS: "green", Outcome.DEVIATION: "yellow", Outcome.FAIL: "bold red",
         Outcome.ERROR: "bold red", Outcome.NOT_APPLICABLE: "dim"}
NO_AID = b""  # --aid none: no application, only the checks that need none


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
    if value is not None and value.lower() == "none":
        return NO_AID
    raw = _hex(ctx, param, value)
    if raw is not None and not 5 <= len(raw) <= 16:
        raise click.BadParameter("an AID is 5..16 bytes (ISO/IEC 7816-4 8.2.1.2)")
    return raw


def _apdus(ctx: click.Context, param: click.Parameter,
           value: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(raw for v in value if (raw := _apdu(ctx, param, v)) is not None)


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
    """Our card's facts by default; any other AID (or none: `NO_AID`) starts from nothing
    but what is given."""
    if aid == NO_AID:
        base = Target()
    else:
        base = NETTX if aid is None or aid == NETTX.aid else Target(aid=aid)
    return dataclasses.replace(
        base, pin=pin, puk=puk,
        pin_reference=base.pin_reference if pin_ref is None else pin_ref,
        pin_format=pin_format or base.pin_format,
        protected=base.protected if protected is None else protected)


def reproduce_command(reader_spec: str | None, state: Path | None, target: Target,
                      only: tuple[str, ...], strict: bool, reconnect: float | None,
                      prepare: tuple[bytes, ...]) -> str:
    """The command line that runs this suite again with the same facts, spelled out: the
    defaults it relied on too, so that it still means the same when they change. Secrets
    are named by where they come from, never shown."""
    env = [f"{name}=..." for name, given in (("NETTX_PIN", target.pin), ("NETTX_PUK", target.puk))
           if given is not None]
    args = ["nettx", "conformance"]
    args += ["--reader", reader_spec] if reader_spec else ["--state", str(state)]
    args += ["--aid", target.aid.hex().upper() if target.aid else "none"]
    if target.pin_reference is not None:
        args += ["--pin-ref", f"{target.pin_reference:02X}"]
    if target.pin is not None or target.puk is not None:
        args += ["--pin-format", target.pin_format]
    if target.protected is not None:
        args += ["--protected", target.protected.hex().upper()]
    for apdu in prepare:
        args += ["--prepare", apdu.hex().upper()]
    if reconnect is not None:
        args += ["--reconnect", f"{reconnect:g}"]
    for check_id in only:
        args += ["--check", check_id]
    if strict:
        args.append("--strict")
    return " ".join(env + [shlex.quote(a) for a in args])


def _prepare(reader: Reader, prepare: tuple[bytes, ...]) -> None:
    """The --prepare commands, each of which the card must carry out."""
    for apdu in prepare:
        resp = ResponseApdu.from_bytes(reader.transmit(apdu))
        if not executed(resp):
            raise ReaderError(f"--prepare {apdu.hex().upper()}: the card answered "
                              f"{resp.sw:04X}")


def _reconnecting(spec: str, seconds: float, prepare: tuple[bytes, ...],
                  opened: list[Reader]) -> Recover:
    """After a check lost the card (it crashed, it was pulled), wait for a card in the same
    reader, prepare it again, and let the suite go on."""

    def recover() -> Reader:
        for reader in opened:
            with contextlib.suppress(Exception):
                reader.close()
        deadline, last = time.monotonic() + seconds, "no attempt"
        time.sleep(0.5)  # pcscd polls for a card about every 0.4 s: let it see the old go
        while time.monotonic() < deadline:
            reader = None
            try:
                reader = open_reader(spec)
                reader.power_on()
                _prepare(reader, prepare)
                opened.append(reader)
                return reader
            except (ReaderError, OSError) as exc:
                last = str(exc)
                if reader is not None:
                    with contextlib.suppress(Exception):
                        reader.close()
                time.sleep(0.2)
        raise ReaderError(f"no card back in {spec} within {seconds:g}s: {last}")

    return recover


def results_table(report: SuiteReport) -> Table:
    table = Table(title=f"ISO/IEC 7816-4 conformance: {report.reader}",
                  caption=f"ATR {report.atr.hex(' ').upper()}  |  {report.capabilities}",
                  caption_justify="left")
    table.add_column("check")
    table.add_column("7816-4 clause")
    table.add_column("result")
    table.add_column("SW seen (preferred)")
    table.add_column("detail", overflow="fold")
    for r in report.results:
        sw = "" if r.sw_seen is None else (
            f"{r.sw_seen:04X} ({' or '.join(f'{w:04X}' for w in r.sw_preferred)})")
        table.add_row(r.check.id, r.check.clause,
                      Text(r.outcome.value, style=STYLE[r.outcome]), sw, r.reason)
    return table


def summary_json(report: SuiteReport, report_path: Path | None, *, strict: bool = False,
                 command: str = "") -> dict[str, object]:
    def sw(value: int | None) -> str | None:
        return None if value is None else f"{value:04X}"

    return {"reader": report.reader, "atr": report.atr.hex().upper(),
            "capabilities": report.capabilities, "strict": strict,
            "passed": report.passes(strict=strict),
            "counts": {o.value: report.count(o) for o in Outcome},
            "failures": [r.check.id for r in report.results
                         if r.outcome in (Outcome.FAIL, Outcome.ERROR)],
            "deviations": [r.check.id for r in report.results
                           if r.outcome is Outcome.DEVIATION],
            "results": [{"check": r.check.id, "clause": r.check.clause,
                         "outcome": r.outcome.value, "reason": r.reason,
                         "sw_seen": sw(r.sw_seen),
                         "sw_preferred": [f"{w:04X}" for w in r.sw_preferred]}
                        for r in report.results],
            "command": command,
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
@click.option("--strict", is_flag=True,
              help="Deviations fail too (a refusal with another status word than preferred).")
@click.option("--prepare", multiple=True, callback=_apdus, metavar="APDU",
              help="Hex command APDU to send once the card is connected, and again after "
                   "--reconnect (e.g. to create the file a test card lacks); each must be "
                   "carried out.")
@click.option("--reconnect", type=click.FloatRange(min=0.5, max=600), metavar="SECONDS",
              help="When a check loses the card (it crashed, it was pulled), wait this long "
                   "for a card in the same reader and go on (with --reader only).")
@click.option("--list", "list_checks", is_flag=True, help="List the checks and exit.")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="Write the results: JUnit XML if FILE ends in .xml, JSON otherwise.")
@json_option
def conformance(reader_spec: str | None, state: Path | None, aid: bytes | None,
                pin: str | None, puk: str | None, pin_ref: int | None, pin_format: str | None,
                protected: bytes | None, only: tuple[str, ...], strict: bool,
                prepare: tuple[bytes, ...], reconnect: float | None, list_checks: bool,
                report_path: Path | None, as_json: bool) -> None:
    """Run the ISO/IEC 7816-4 conformance suite against the card in a reader.

    Each check is one behaviour of one clause; it passes, deviates (the card refused as it
    should, with another status word than the preferred one), fails (it carried out what it
    should refuse, returned wrong data, changed state), or is not applicable (the card does
    not offer the feature, or an option it needs is missing). The exit status is 1 when a
    check failed or could not finish, and with --strict when one deviated; else 0.

    --aid none runs the checks that need no application (the others are not applicable);
    the table ends with the command line that reproduces it.

    The right PIN enables the PIN checks, the PUK the blocking check (the PIN is blocked,
    then unblocked). Neither is an argument: NETTX_PIN / NETTX_PUK, --pin-file / --puk-file,
    --pin-fd / --puk-fd, or --ask-pin / --ask-puk for a hidden prompt.
    """
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
    if reconnect is not None and reader_spec is None:
        raise click.BadParameter("needs --reader (the card to wait for)",
                                 param_hint="--reconnect")
    target = build_target(aid, pin, puk, pin_ref, pin_format, protected)
    command = reproduce_command(reader_spec, state, target, only, strict, reconnect, prepare)
    opened: list[Reader] = []
    try:
        with open_card(reader_spec, state) as reader:
            _prepare(reader, prepare)
            recover = (None if reconnect is None or reader_spec is None
                       else _reconnecting(reader_spec, reconnect, prepare, opened))
            try:
                report = run_suite(reader, target, only=only, recover=recover)
            finally:
                for again in opened:
                    with contextlib.suppress(Exception):
                        again.close()
        if report_path is not None:
            write_report(report, report_path, strict=strict)
    except (NettxError, OSError) as exc:
        raise CliFail(str(exc)) from exc
    passed = report.passes(strict=strict)
    if as_json:
        print_json(summary_json(report, report_path, strict=strict, command=command))
        if not passed:
            raise SystemExit(1)
        return
    console.print(results_table(report))
    totals = ", ".join(f"{report.count(o)} {o.value}" for o in Outcome)
    verdict = ("no failure" + (" and no deviation" if strict else "") if passed
               else "FAILED")
    console.print(f"{totals}: {verdict}")
    console.print(Text(f"reproduce: {command}"), soft_wrap=True)
    if report_path is not None:
        console.print(f"report written to {report_path}")
    if not passed:
        raise SystemExit(1)
