"""`nettx issuer serve|add-account|accounts`: the card manager (card issuer)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from host.centre.pairing import CardExpectation
from host.cli.kit import (
    CliFail,
    console,
    fails_cleanly,
    home_option,
    identifier,
    json_option,
    print_json,
)
from host.cli.partyopts import (
    DB,
    DbLocation,
    config_of,
    expiry,
    key_module,
    party_db,
    serve,
    server_options,
)
from host.cli.secretopts import CARD_NUMBER, secret_options
from host.parties.issuer import IssuerServer
from host.parties.seller import Endpoint
from host.storage.ledger import Account, Ledger
from host.storage.location import Location


@click.group()
def issuer() -> None:
    """The card manager (card issuer): accounts, authorisations, the ledger."""


@issuer.command("serve")
@server_options
@fails_cleanly
def issuer_serve(key_file: Path | None, reader_spec: str | None, state: Path | None,
                 card: CardExpectation, pin: str | None, listen: Endpoint,
                 db: Location | None, window: int, crash_at: str | None) -> None:
    """Authorise orders: authenticate the holder against its account, debit once per order."""
    with key_module(key_file, reader_spec, state, pin, card) as keys:
        serve(IssuerServer(keys, config_of(listen, window, crash_at),
                           party_db(card.home, "issuer", db)))


@issuer.command("add-account")
@home_option
@click.option("--db", type=DB, metavar="PATH|URL",
              help="The card manager's ledger: a SQLite file or a postgresql:// URL. Default: "
                   "HOME/parties/issuer.sqlite, the one `nettx issuer serve` uses without "
                   "--db.")
@secret_options(CARD_NUMBER)
@click.option("--expiry", required=True, callback=expiry, help="MM/YY")
@click.option("--holder", required=True, callback=identifier,
              help="The holder identifier the card number belongs to.")
@click.option("--name", required=True)
@click.option("--phone", default="", help="Checked against the order when given.")
@click.option("--balance", type=click.IntRange(0), required=True,
              help="Available funds, in minor units (cents).")
@click.option("--blocked", is_flag=True, help="Refuse every authorisation on this card.")
@fails_cleanly
def issuer_add_account(home: Path, db: Location | None, card_number: str, expiry: str, holder: str,
                       name: str, phone: str, balance: int, blocked: bool) -> None:
    """Create or replace an account in the card manager's ledger. The card number:
    NETTX_CARD_NUMBER, --card-number-file, --card-number-fd, or a hidden prompt."""
    ledger = Ledger(party_db(home, "issuer", db))
    try:
        ledger.add_account(Account(card_number, holder, name, phone, expiry, balance, blocked))
    finally:
        ledger.close()
    click.echo(f"account {mask(card_number)} for {holder}: balance {balance}"
               f"{' (blocked)' if blocked else ''}")


@issuer.command("accounts")
@home_option
@click.option("--db", type=DbLocation(exists=True), metavar="PATH|URL",
              help="The card manager's ledger: a SQLite file or a postgresql:// URL. "
                   "Default: HOME/parties/issuer.sqlite.")
@json_option
@fails_cleanly
def issuer_accounts(home: Path, db: Location | None, as_json: bool) -> None:
    """List the ledger's accounts (card numbers masked)."""
    if db is None:
        db = home / "parties" / "issuer.sqlite"
        if not db.exists():
            raise CliFail(f"no ledger at {db}: give --db, or add an account first")
    ledger = Ledger(db)
    try:
        accounts = ledger.accounts()
    finally:
        ledger.close()
    if as_json:
        print_json({"accounts": [{"card": mask(a.card_number), "holder": a.holder,
                                  "name": a.name, "expiry": a.expiry, "balance": a.balance,
                                  "blocked": bool(a.blocked)} for a in accounts]})
        return
    table = Table("card", "holder", "name", "expiry", "balance", "blocked", title="accounts")
    for a in accounts:
        # Text: a holder or name is shown as written, never read as rich markup
        table.add_row(mask(a.card_number), Text(a.holder), Text(a.name), a.expiry,
                      str(a.balance), "yes" if a.blocked else "")
    console.print(table)


def mask(number: str) -> str:
    return "•" * (len(number) - 4) + number[-4:]
