"""Secrets on the command line: the PIN, PUK, new PIN and card number each come from a file,
a descriptor, the environment or a hidden prompt, never from argv (`secret_options`)."""

from __future__ import annotations

import dataclasses
import functools
import hmac
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from card_applet.vocabulary import encode_pin
from host.cli import secretenv
from host.cli.kit import CliFail, warn


def check_pin(value: str, ctx: click.Context) -> None:
    """A PIN or PUK is 4..8 ASCII digits (the card's PIN block): refused before any APDU."""
    encode_pin(value)


def check_card_number(value: str, ctx: click.Context) -> None:
    if not re.fullmatch(r"\d{12,19}", value):
        raise ValueError("expected 12..19 digits")


# A secret (PIN, PUK, new PIN, card number) never travels in argv: every user on the machine
# reads /proc/PID/cmdline (`ps`), and the shell keeps it in its history. Each one comes, in
# this order, from `--X-file PATH` (its first line), `--X-fd N` (an inherited descriptor, read
# to its first newline or EOF, then closed), the environment variable NETTX_X (readable only
# by the same user's processes; removed from the environment before any child starts), or a
# hidden prompt when stdin is a terminal (a new PIN or PUK asked twice). With none of these
# and no terminal the command stops with one line. The old value-taking options (--pin 1234)
# are refused with a pointer to these ways rather than silently honoured.

_FD_READ_MAX = 4096


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
