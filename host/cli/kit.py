"""What every `nettx` command shares: one-line failures, the common options and their checks,
how secrets are read, and the file modes of what the CLI writes."""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import os
import re
import sqlite3
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console, ConsoleDimensions

from card_applet import blom
from card_applet.store_errors import StateError
from card_applet.sw import CardError
from card_applet.vocabulary import encode_pin
from host.centre.pairing import CardExpectation
from host.cli import secretenv
from host.cli.cardaccess import state_key_options
from terminal.errors import NettxError

# A table written to a pipe or a file keeps its full width: rich would otherwise lay it out
# for 80 columns and cut what does not fit (identifiers are up to 64 bytes).
PIPE_WIDTH = 10_000


class WholeConsole(Console):
    """A rich Console as wide as the text when its output is not a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = WholeConsole()
err_console = WholeConsole(stderr=True)


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


def check_pin(value: str, ctx: click.Context) -> None:
    """A PIN or PUK is 4..8 ASCII digits (the card's PIN block): refused before any APDU."""
    encode_pin(value)


def check_card_number(value: str, ctx: click.Context) -> None:
    if not re.fullmatch(r"\d{12,19}", value):
        raise ValueError("expected 12..19 digits")


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


# -- secrets ----------------------------------------------------------------------------------
#
# A secret (PIN, PUK, new PIN, card number) never travels in argv: every user on the machine
# reads /proc/PID/cmdline (`ps`), and the shell keeps it in its history. Each one comes, in
# this order, from `--X-file PATH` (its first line), `--X-fd N` (an inherited descriptor, read
# to its first newline or EOF, then closed), the environment variable NETTX_X (readable only
# by the same user's processes; removed from the environment before any child starts), or a
# hidden prompt when stdin is a terminal (a new PIN or PUK asked twice). With none of these
# and no terminal the command stops with one line. The old value-taking options (--pin 1234)
# are refused with a pointer to these ways rather than silently honoured.

_FD_READ_MAX = 4096


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@dataclasses.dataclass(frozen=True)
class Secret:
    """One secret a command reads: its keyword argument, option stem and environment name."""

    param: str  # the command function's keyword: "pin"
    stem: str  # --pin-file, --pin-fd, NETTX_PIN
    what: str  # "PIN", for prompts and errors
    check: Callable[[str, click.Context], None]  # raises ValueError with the reason
    confirm: bool = False  # a new secret: asked twice at the prompt
    legacy: tuple[str, ...] = ()  # the refused argv options that used to carry it
    optional: bool = False  # absent unless a source gives it or --ask-STEM asks for it
    needed: Callable[[Mapping[str, Any]], bool] | None = None  # None: always

    @property
    def env(self) -> str:
        return "NETTX_" + self.stem.upper().replace("-", "_")

    @property
    def file_param(self) -> str:
        return self.stem.replace("-", "_") + "_file"

    @property
    def fd_param(self) -> str:
        return self.stem.replace("-", "_") + "_fd"

    @property
    def ask_param(self) -> str:
        return "ask_" + self.stem.replace("-", "_")

    def ways(self) -> str:
        return f"{self.env}, --{self.stem}-file PATH or --{self.stem}-fd N"


PIN = Secret("pin", "pin", "PIN", check_pin, legacy=("--pin",))
NEW_PIN = Secret("new_pin", "new-pin", "new PIN", check_pin, confirm=True)
PUK = Secret("puk", "puk", "PUK", check_pin, legacy=("--puk",))
CARD_NUMBER = Secret("card_number", "card-number", "card number", check_card_number,
                     legacy=("--card-number",))

def _first_line(raw: bytes, where: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter("not UTF-8 text", param_hint=where) from exc
    return text.split("\n", 1)[0].removesuffix("\r")


def _read_file(path: Path, what: str, where: str) -> str:
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            raw = f.read(_FD_READ_MAX)
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint=where) from exc
    if stat.S_ISREG(mode) and mode & 0o077:
        warn(f"{path} holds the {what} and is readable by others (mode "
             f"{stat.S_IMODE(mode):04o}): chmod 600 it")
    return _first_line(raw, where)


def _read_fd(fd: int, where: str) -> str:
    if os.isatty(fd):  # it would echo what is typed: the prompt hides it
        raise click.BadParameter(f"descriptor {fd} is a terminal: leave the option out to be "
                                 "asked without echo", param_hint=where)
    raw = bytearray()
    try:
        while len(raw) < _FD_READ_MAX and b"\n" not in raw:
            chunk = os.read(fd, _FD_READ_MAX - len(raw))
            if not chunk:
                break
            raw += chunk
        os.close(fd)
    except OSError as exc:
        raise click.BadParameter(f"descriptor {fd}: {exc.strerror}", param_hint=where) from exc
    return _first_line(bytes(raw), where)


def _prompt(secret: Secret) -> str:
    value: str = click.prompt(secret.what, hide_input=True, err=True)
    if secret.confirm:
        again: str = click.prompt(f"{secret.what} again", hide_input=True, err=True)
        if not hmac.compare_digest(value.encode(), again.encode()):
            raise CliFail(f"the two {secret.what}s do not match: nothing was changed")
    return value


def read_secret(secret: Secret, ctx: click.Context, *, path: Path | None, fd: int | None,
                ask: bool) -> str | None:
    """The secret from the first source that has it (see above), checked; None when an
    optional secret is not given."""
    if path is not None and fd is not None:
        raise click.UsageError(f"give --{secret.stem}-file or --{secret.stem}-fd, not both")
    env = secretenv.take(secret.env)
    if path is not None:
        where, value = f"--{secret.stem}-file", _read_file(path, secret.what,
                                                            f"--{secret.stem}-file")
    elif fd is not None:
        where, value = f"--{secret.stem}-fd", _read_fd(fd, f"--{secret.stem}-fd")
    elif env is not None:
        where, value = secret.env, env
    elif secret.optional and not ask:
        return None
    elif sys.stdin.isatty():
        where, value = "the prompt", _prompt(secret)
    else:
        raise CliFail(f"no {secret.what} given and no terminal to ask it on: use "
                      f"{secret.ways()}")
    try:
        secret.check(value, ctx)
    except ValueError as exc:
        raise click.BadParameter(f"the {secret.what}: {exc}", param_hint=where) from exc
    return value


def _refuse_in_argv(secret: Secret) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def refuse(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            raise click.UsageError(
                f"{param.opts[0]} is no longer accepted: a {secret.what} on the command line "
                f"is visible to every user (ps) and kept in the shell history. Set "
                f"{secret.ways()}, or type it at the prompt", ctx)

    return refuse


def secret_options(*secrets: Secret) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of SECRETS to a command and read each one after parsing, before the
    command runs: the function receives it as its keyword (`pin: str`)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            for secret in secrets:
                path = kwargs.pop(secret.file_param)
                fd = kwargs.pop(secret.fd_param)
                ask = kwargs.pop(secret.ask_param, False)
                if secret.needed is not None and not secret.needed(kwargs):
                    kwargs[secret.param] = None
                    continue
                kwargs[secret.param] = read_secret(secret, ctx, path=path, fd=fd, ask=ask)
            return fn(*args, **kwargs)

        for secret in reversed(secrets):
            for legacy in secret.legacy:
                wrapper = click.option(legacy, hidden=True, expose_value=False,
                                       callback=_refuse_in_argv(secret))(wrapper)
            prompt = ("asked twice at a hidden prompt" if secret.confirm
                      else "asked at a hidden prompt")
            if secret.optional:
                wrapper = click.option(
                    f"--ask-{secret.stem}", secret.ask_param, is_flag=True,
                    help=f"Ask the {secret.what} at a hidden prompt when none of "
                         f"{secret.ways()} gives it.")(wrapper)
                when = (f"Optional; also from {secret.env}, or --ask-{secret.stem} for a "
                        "hidden prompt")
            else:
                when = f"Otherwise from {secret.env}, or {prompt} on a terminal"
            wrapper = click.option(
                f"--{secret.stem}-fd", secret.fd_param, type=click.IntRange(0), metavar="N",
                help=f"Read the {secret.what} from file descriptor N (0: stdin).")(wrapper)
            wrapper = click.option(
                f"--{secret.stem}-file", secret.file_param,
                type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
                help=f"Read the {secret.what} from the first line of PATH (mode 0600). "
                     f"{when}; never on the command line.")(wrapper)
        return wrapper

    return decorate
