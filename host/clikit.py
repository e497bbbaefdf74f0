"""What every `nettx` command shares: one-line failures, the common options and their checks."""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from card_applet import blom
from card_applet import pin as pin_block
from card_applet.store_errors import StateError
from card_applet.sw import CardError
from host.cardaccess import state_key_options
from host.pairing import CardExpectation
from terminal.errors import NettxError

console = Console()
err_console = Console(stderr=True)
DEFAULT_HOME = Path(os.environ.get("NETTX_HOME", Path.home() / ".nettx"))


class CliFail(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def fails_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every refusal the project raises into one line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (NettxError, CardError, StateError, OSError, sqlite3.Error) as exc:
            raise CliFail(str(exc)) from exc

    return wrapper


def home_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--home", type=click.Path(path_type=Path), default=DEFAULT_HOME,
                        show_default=True, envvar="NETTX_HOME",
                        help="Directory for the centre's and the parties' files.")(fn)


def reader_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = state_key_options(fn)
    fn = click.option("--state", type=click.Path(path_type=Path),
                      help="Card EEPROM file: start this card on the embedded reader "
                           "(the default when no --reader is given).")(fn)
    fn = click.option("--reader", "reader_spec", metavar="SPEC",
                      help="inprocess:FILE | embedded:[HOST:]PORT | pcsc[:NAME|INDEX] | "
                           "serial:DEVICE")(fn)
    return fn


def card_auth_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Which card may receive secrets (`--pairing`, `--holder-id`, `--home`), handed to the
    command as one `card: CardExpectation` argument (host/pairing.py)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, home: Path, pairing_file: Path | None, holder_id: str | None,
                **kwargs: Any) -> Any:
        return fn(*args, card=CardExpectation(home, pairing_file, holder_id), **kwargs)

    wrapper = click.option("--holder-id", callback=identifier,
                           help="Your holder identifier: only a card whose FCI names it, and "
                                "that proves it, gets the PIN (needed when HOME pairs the "
                                "cards of several holders).")(wrapper)
    wrapper = click.option("--pairing", "pairing_file",
                           type=click.Path(exists=True, dir_okay=False, path_type=Path),
                           help="The card's pairing file (its card authentication key, "
                                "written at personalisation). Default: "
                                "HOME/cards/SERIAL.pairing.json for the card in the reader. "
                                "A card that cannot prove it holds the key gets no PIN, "
                                "PUK or plaintext.")(wrapper)
    return home_option(wrapper)


def pin_digits(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A PIN or PUK is 4..8 ASCII digits (the card's PIN block): refused before any APDU."""
    if value is not None:
        try:
            pin_block.encode_pin(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


def identifier(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is None:
            continue
        try:
            blom.identifier_bytes(v)
        except blom.IdentifierError as exc:
            raise click.BadParameter(f"{v!r}: {exc}") from exc
    return value
