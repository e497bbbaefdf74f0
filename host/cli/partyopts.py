"""Options and plumbing the party commands share: a party's key module (row file or card),
its database, its listening endpoint, and serving it until a signal."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from host.centre.authority import read_row_file
from host.centre.pairing import CardExpectation, authenticated_session
from host.cli.cardaccess import open_card
from host.cli.kit import (
    card_auth_options,
    reader_options,
)
from host.cli.secretopts import PIN, secret_options
from host.parties.keymodule import KeyModule
from host.parties.seller import Endpoint
from host.parties.server import PartyServer, ServerConfig, run_until_signalled
from host.storage.location import Location, is_postgresql


def endpoint(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """HOST:PORT; port 0 (listen only) picks a free port, printed once bound."""
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or not host:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return Endpoint(host, int(port))


def _uses_a_card(params: Mapping[str, Any]) -> bool:
    return params.get("reader_spec") is not None or params.get("state") is not None


def key_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    # the PIN of the party's card, read only when --reader / --state names one
    fn = secret_options(dataclasses.replace(PIN, needed=_uses_a_card))(fn)
    fn = card_auth_options(reader_options(fn))
    fn = click.option("--key", "key_file", type=click.Path(exists=True, path_type=Path),
                      help="The party's row file (`nettx authority issue --out`): a software "
                           "security module. Or give --reader/--state for a card.")(fn)
    return fn


def server_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--crash-at", hidden=True, help="Tests: kill -9 at this point.")(fn)
    fn = click.option("--window", type=click.IntRange(1, 86400), default=300, show_default=True,
                      help="Seconds an order's timestamp may differ from this clock.")(fn)
    fn = click.option("--db", type=DB, metavar="PATH|URL",
                      help="This party's database (ledger, orders or shipments): a SQLite "
                           "file, or a postgresql://USER@HOST/DATABASE URL, which several "
                           "instances of the party may share. Default: "
                           "HOME/parties/ROLE.sqlite.")(fn)
    fn = click.option("--listen", required=True, callback=endpoint, metavar="HOST:PORT",
                      help="Where to accept connections (port 0: any free port).")(fn)
    return key_options(fn)


@contextlib.contextmanager
def key_module(key_file: Path | None, reader_spec: str | None, state: Path | None,
               pin: str | None, card: CardExpectation) -> Iterator[KeyModule]:
    if key_file is not None:
        if reader_spec or state:
            raise click.UsageError("give --key, or --reader/--state, not both")
        ident, row = read_row_file(key_file)
        yield KeyModule.software(ident, row)
        return
    if reader_spec is None and state is None:
        raise click.UsageError("give --key ROWFILE, or --reader/--state (and the card's PIN)")
    if pin is None:
        raise click.UsageError("a card needs its PIN")
    with open_card(reader_spec, state) as reader:
        yield KeyModule.on_card(authenticated_session(reader, card), pin)


class DbLocation(click.ParamType):
    """`--db`: a postgresql:// (or postgres://) URL as given, else a SQLite file's path."""

    name = "db"

    def __init__(self, *, exists: bool = False) -> None:
        self.exists = exists  # a SQLite file must exist already (a command that only reads)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Location:
        if isinstance(value, Path) or is_postgresql(value):
            return value  # type: ignore[no-any-return]
        return click.Path(exists=self.exists, dir_okay=False,  # type: ignore[no-any-return]
                          path_type=Path).convert(value, param, ctx)


DB = DbLocation()


def party_db(home: Path, role: str, db: Location | None) -> Location:
    """`--db`, else the party's database in the home, HOME/parties/ROLE.sqlite: the card
    manager's commands and its server find the same ledger without being told."""
    if db is not None:
        return db
    folder = home / "parties"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder / f"{role}.sqlite"


def serve(server: PartyServer) -> None:
    def ready(port: int) -> None:
        # the one line a supervisor (tests, the demo) reads to learn the bound port
        click.echo(f"{server.role} {server.identifier} listening on "
                   f"{server.config.host}:{port}")
        sys.stdout.flush()

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    run_until_signalled(server, ready)


def config_of(listen: Endpoint, window: int, crash_at: str | None) -> ServerConfig:
    return ServerConfig(host=listen.host, port=listen.port, window=window, crash_at=crash_at)


def expiry(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and not re.fullmatch(r"(0[1-9]|1[0-2])/\d\d", value):
        raise click.BadParameter("expected MM/YY")
    return value
