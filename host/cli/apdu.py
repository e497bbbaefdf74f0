"""`nettx card apdu`: raw APDUs from the command line or a scriptor-style script file, with
the conventions opensc-tool and scriptor follow (GET RESPONSE after 61xx, re-send after 6Cxx)
and an expected status word per command, so a script that fails exits non-zero."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from card_applet.apdu import CommandApdu, ResponseApdu
from card_applet.sw import describe
from host.cli.cardaccess import open_card
from host.cli.kit import CliFail, fails_cleanly, json_option, print_json, reader_options
from terminal.apdu_script import ScriptError, Step, StepKind, exchange, parse_script, parse_step
from terminal.reader import Reader


def _steps(apdus: tuple[str, ...], script: str | None) -> list[Step]:
    steps: list[Step] = []
    try:
        for number, text in enumerate(apdus, 1):
            step = parse_step(text, where=f"argument {number}: ")
            if step is not None:
                steps.append(step)
        if script is not None:
            if script == "-":
                steps += parse_script(sys.stdin.read(), "<stdin>")
            else:
                path = Path(script)
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise click.BadParameter(f"cannot read {path}: {exc}",
                                             param_hint="'--script'") from exc
                steps += parse_script(text, str(path))
    except ScriptError as exc:
        raise click.BadParameter(str(exc)) from exc
    if not any(step.kind is StepKind.COMMAND for step in steps):
        raise click.UsageError("no APDU to send: give APDUs as arguments or --script FILE")
    return steps


def _hex(data: bytes) -> str:
    return data.hex(" ").upper()


def _show(cmd: CommandApdu, resp: ResponseApdu, echo: bool) -> None:
    if echo:
        click.echo(f"> {_hex(cmd.to_bytes())}")
    data = _hex(resp.data) + " " if resp.data else ""
    click.echo(f"{'< ' if echo else ''}{data}{resp.sw:04X}  {describe(resp.sw)}")


def _run(reader: Reader, steps: list[Step], *, follow: bool, echo: bool,
         record: list[dict[str, object]] | None = None) -> None:
    """Each step in turn; with `record`, what happened goes there instead of stdout."""
    for step in steps:
        if step.kind is StepKind.EXIT:
            return
        if step.kind is StepKind.RESET:
            atr = reader.reset()
            if record is None:
                click.echo(f"reset: ATR {_hex(atr)}")
            else:
                record.append({"reset": True, "atr": atr.hex().upper()})
            continue
        assert step.command is not None
        resp = exchange(reader, step.command, follow=follow)
        if record is None:
            _show(step.command, resp, echo)
        else:
            record.append({"command": step.command.to_bytes().hex().upper(),
                           "data": resp.data.hex().upper(), "sw": f"{resp.sw:04X}",
                           "meaning": describe(resp.sw),
                           "expected": step.expect.accepts(resp.sw)})
        if not step.expect.accepts(resp.sw):
            raise CliFail(f"{step.where}{_hex(step.command.to_bytes()[:4])}: card answered "
                          f"{resp.sw:04X} ({describe(resp.sw)}), expected {step.expect}")


EXAMPLES = """
\b
Examples:
  nettx card apdu --state alice.card.json 00A404000AF0455030373931393031
  nettx card apdu --state alice.card.json '00 CA 00 C2 00' '00:CA:DF:11:00 = 6A88'
  nettx card apdu --reader pcsc:0 --script select.apdu --echo
"""


@click.command("apdu", epilog=EXAMPLES)
@reader_options
@click.argument("apdus", nargs=-1)
@click.option("--script", metavar="FILE",
              help="Read steps from FILE ('-' for stdin), scriptor's format: one APDU per "
                   "line, '#' comments, 'reset', 'exit'.")
@click.option("--raw", is_flag=True,
              help="Send each APDU as given: no GET RESPONSE after 61xx, no re-send after 6Cxx.")
@click.option("--echo", is_flag=True, help="Print each command ('> ') before its response.")
@json_option
@fails_cleanly
def card_apdu(reader_spec: str | None, state: Path | None, apdus: tuple[str, ...],
              script: str | None, raw: bool, echo: bool, as_json: bool) -> None:
    """Send APDUs in hex (spaces or colons allowed) and print each response.

    A command may end in '= SW', the status words it must answer: 9000, 63CX (X is any
    nibble), 9000,6A82, or any. Without one it must answer 9000. The first mismatch stops
    the run with a one-line error and exit status 1.
    """
    steps = _steps(apdus, script)
    record: list[dict[str, object]] | None = [] if as_json else None
    try:
        with open_card(reader_spec, state) as reader:
            _run(reader, steps, follow=not raw, echo=echo, record=record)
    finally:
        if record is not None and record:  # what ran, also when a status word stopped it
            print_json({"exchanges": record})
