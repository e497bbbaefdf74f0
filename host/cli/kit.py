"""What every `nettx` command shares: one-line failures, the common options and their checks,
and the file modes of what the CLI writes. How secrets are read is host/cli/secretopts.py."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from card_applet import blom
from card_applet.store_errors import StateError
from card_applet.sw import CardError
from host.cli.cardaccess import state_key_options
from terminal.errors import NettxError

# A table written to a pipe or a file keeps its full width: rich would otherwise lay it out
# for 80 columns and cut what does not fit (identifiers are up to 64 bytes).
PIPE_WIDTH = 10_000


# rich.console costs about 50 ms of CPU to import, more than some commands' own work (`authority
# issue` at k = 512 is measured against its floor): the consoles are made on first use.
_TERMINAL_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def _whole_console(stderr: bool) -> Any:
    """A rich Console as wide as the text when its output is not a terminal."""
    from rich.console import Console, ConsoleDimensions

    class WholeConsole(Console):
        @property
        def size(self) -> ConsoleDimensions:
            size = super().size
            return size if self.is_terminal else ConsoleDimensions(PIPE_WIDTH, size.height)

        @size.setter
        def size(self, new_size: tuple[int, int]) -> None:
            Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    return WholeConsole(stderr=stderr)


class LazyConsole:
    """rich's Console (WholeConsole), made when first used. `is_terminal` on a stream that is
    no terminal, with none of the variables that make rich treat it as one, answers False
    without making it."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Any = None

    @property
    def is_terminal(self) -> bool:
        if self._console is None and not any(os.environ.get(name) for name in _TERMINAL_ENV):
            stream = sys.stderr if self._stderr else sys.stdout
            isatty = getattr(stream, "isatty", None)
            if isatty is None or not isatty():
                return False
        return bool(self._made().is_terminal)

    def _made(self) -> Any:
        if self._console is None:
            self._console = _whole_console(self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)


console = LazyConsole()
err_console = LazyConsole(stderr=True)


def rich_console(made: Any) -> Any:
    """The rich Console behind `console` or `err_console` (or `made` itself if it is one), for
    rich's own objects (Progress, Live) that take it."""
    return made._made() if isinstance(made, LazyConsole) else made


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as one JSON document on stdout (keys: "
                             "README, 'JSON output'); errors stay one line on stderr.")(fn)


def print_json(doc: object) -> None:
    """The result alone on stdout: no markup, no progress."""
    click.echo(json.dumps(doc, indent=1, ensure_ascii=False))
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
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


# -- file modes -------------------------------------------------------------------------------
#
# The home holds the master matrix, rows, card files, and the parties' databases (card numbers,
# names, destinations) and logs: no other user may read any of it. A umask of 077 at entry makes
# every file and directory this process and its children create 0600 / 0700, whichever module
# creates it; an existing home that others can enter is tightened to 0700, with a warning.

PRIVATE_UMASK = 0o077


def restrict_umask() -> None:
    os.umask(PRIVATE_UMASK)


def secure_home(path: Path) -> Path:
    """Tighten an existing home to 0700 (warning once); a new one is made 0700 by the umask."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise CliFail(f"{path}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
        if st.st_uid != os.getuid():
            raise CliFail(f"home {path} belongs to another user and others can enter it "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}): choose another --home")
        path.chmod(0o700)
        warn(f"home {path} was mode {stat.S_IMODE(st.st_mode):04o}: tightened to 0700")
    return path


def secure_home_option(ctx: click.Context, param: click.Parameter,
                       value: Path | None) -> Path | None:
    return None if value is None else secure_home(value)


# -- global options ---------------------------------------------------------------------------
#
# --home, --reader and --state are taken before the subcommand too (`nettx --home D card
# info`, as `ykman -r NAME piv info`). A subcommand's own option wins; then the global one;
# then the environment (NETTX_HOME) and the default.

GLOBAL_PREFIX = "global_"


def global_value(ctx: click.Context, name: str) -> Any:
    """The value given for `name` before the subcommand, or None."""
    root = ctx.find_root()
    if root is ctx:
        return None
    return root.params.get(GLOBAL_PREFIX + name)


def _given_here(ctx: click.Context, param: click.Parameter) -> bool:
    source = ctx.get_parameter_source(param.name) if param.name else None
    return source in (click.core.ParameterSource.COMMANDLINE,
                      click.core.ParameterSource.PROMPT)


def _home(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    if not _given_here(ctx, param):
        value = global_value(ctx, "home") or value
    return secure_home(value or DEFAULT_HOME)


def home_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--home", type=click.Path(path_type=Path), envvar="NETTX_HOME",
                        callback=_home,
                        help=f"Directory for the centre's and the parties' files (kept "
                             f"0700; a looser existing one is tightened). Default: "
                             f"NETTX_HOME, else {DEFAULT_HOME}.")(fn)


def _inherit(name: str, required: bool = False,
             must_exist: bool = False) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            value = global_value(ctx, name)
            if value is not None and name == "state":
                value = Path(value)
        if value is None and required:
            raise click.MissingParameter(ctx=ctx, param=param)
        if must_exist and value is not None and not Path(value).exists():
            raise click.BadParameter(f"{value}: no such file", ctx=ctx, param=param)
        return value

    return callback


def state_option(*, required: bool = False, must_exist: bool = False,
                 help: str = "Card EEPROM file: start this card on the embedded reader "
                             "(the default when no --reader is given).") -> Callable[..., Any]:
    """--state (or the global one before the subcommand)."""
    return click.option("--state", type=click.Path(path_type=Path),
                        callback=_inherit("state", required, must_exist),
                        help=help + (" Required (here or before the subcommand)."
                                     if required else ""))


def reader_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--reader", "reader_spec", metavar="SPEC", callback=_inherit("reader"),
                        help="inprocess:FILE | embedded:[HOST:]PORT | pcsc[:NAME|INDEX] | "
                             "serial:DEVICE")(fn)


def global_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The main group's --home, --reader, --state: defaults for every subcommand."""
    fn = click.option("--state", "global_state", type=click.Path(path_type=Path),
                      metavar="FILE", help="Default --state for the subcommand.")(fn)
    fn = click.option("--reader", "-r", "global_reader", metavar="SPEC",
                      help="Default --reader for the subcommand.")(fn)
    fn = click.option("--home", "global_home", type=click.Path(path_type=Path),
                      metavar="DIR", help="Default --home for the subcommand.")(fn)
    return fn


def reader_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = state_key_options(fn)
    fn = state_option()(fn)
    return reader_option(fn)


def card_auth_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Which card may receive secrets (`--pairing`, `--holder-id`, `--home`), handed to the
    command as one `card: CardExpectation` argument (host/centre/pairing.py)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, home: Path, pairing_file: Path | None, holder_id: str | None,
                **kwargs: Any) -> Any:
        # here, not at the top: the card authentication code (AES) loads for the commands
        # that talk to a card, not for every command
        from host.centre.pairing import CardExpectation

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


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)
