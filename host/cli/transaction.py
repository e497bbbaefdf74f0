"""`nettx seller|issuer|delivery serve`, `nettx issuer add-account|accounts` and `nettx buy`:
the four parties of the transaction on the command line."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from host.centre.authority import read_row_file
from host.centre.pairing import CardExpectation, authenticated_session
from host.cli.cardaccess import open_card
from host.cli.kit import (
    CARD_NUMBER,
    PIN,
    CliFail,
    card_auth_options,
    console,
    err_console,
    fails_cleanly,
    home_option,
    identifier,
    json_option,
    print_json,
    reader_options,
    secret_options,
)
from host.errors import OrderError, PolicyError
from host.parties.delivery import DeliveryServer
from host.parties.holder import HolderClient, Outcome, Quote
from host.parties.issuer import IssuerServer
from host.parties.keymodule import KeyModule
from host.parties.seller import Endpoint, SellerConfig, SellerServer
from host.parties.server import PartyServer, ServerConfig, run_until_signalled
from host.protocol.order import (
    DEFAULT_POLICY,
    Order,
    OrderField,
    OrderForm,
    PartitionPolicy,
    Party,
    load_catalogue,
    parse_lines,
)
from host.storage.ledger import Account, Ledger


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
    fn = click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
                      help="This party's SQLite database (ledger, orders or shipments). "
                           "Default: HOME/parties/ROLE.sqlite.")(fn)
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


def party_db(home: Path, role: str, db: Path | None) -> Path:
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


# -- seller -----------------------------------------------------------------------------------


@click.group()
def seller() -> None:
    """The seller: serves its order form and drives orders."""


def read_form_file(path: Path, seller_id: str, issuer_id: str, delivery_id: str) -> OrderForm:
    """The catalogue file: {"currency": "EUR", "items": [{"number", "name", "unit_price"}],
    "policy": {"grants": {...}, "exposures": [[field, party], ...]}} (policy optional)."""
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
            raise PolicyError("needs an 'items' list")
        policy = (PartitionPolicy.from_cbor(doc["policy"]) if "policy" in doc
                  else DEFAULT_POLICY)
        return OrderForm(seller_id, issuer_id, delivery_id, str(doc.get("currency", "EUR")),
                         load_catalogue(doc["items"]), policy)
    except (ValueError, PolicyError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc


@seller.command("serve")
@server_options
@click.option("--catalogue", type=click.Path(exists=True, path_type=Path), required=True,
              help="JSON catalogue (and optional partition policy); see docs/protocol.md.")
@click.option("--issuer", "issuer_at", required=True, callback=endpoint, metavar="HOST:PORT")
@click.option("--issuer-id", required=True, callback=identifier)
@click.option("--delivery", "delivery_at", required=True, callback=endpoint, metavar="HOST:PORT")
@click.option("--delivery-id", required=True, callback=identifier)
@fails_cleanly
def seller_serve(key_file: Path | None, reader_spec: str | None, state: Path | None,
                 card: CardExpectation, pin: str | None,
                 listen: Endpoint, db: Path | None, window: int, crash_at: str | None,
                 catalogue: Path, issuer_at: Endpoint, issuer_id: str, delivery_at: Endpoint,
                 delivery_id: str) -> None:
    """Serve the order form; forward each order's parts to the card manager and, once it
    approves, to the delivery company."""
    with key_module(key_file, reader_spec, state, pin, card) as keys:
        form = read_form_file(catalogue, keys.identifier, issuer_id, delivery_id)
        serve(SellerServer(keys, config_of(listen, window, crash_at),
                           SellerConfig(form, issuer_at, delivery_at,
                                        party_db(card.home, "seller", db))))


# -- card manager -----------------------------------------------------------------------------


@click.group()
def issuer() -> None:
    """The card manager (card issuer): accounts, authorisations, the ledger."""


@issuer.command("serve")
@server_options
@fails_cleanly
def issuer_serve(key_file: Path | None, reader_spec: str | None, state: Path | None,
                 card: CardExpectation, pin: str | None, listen: Endpoint,
                 db: Path | None, window: int, crash_at: str | None) -> None:
    """Authorise orders: authenticate the holder against its account, debit once per order."""
    with key_module(key_file, reader_spec, state, pin, card) as keys:
        serve(IssuerServer(keys, config_of(listen, window, crash_at),
                           party_db(card.home, "issuer", db)))


def expiry(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and not re.fullmatch(r"(0[1-9]|1[0-2])/\d\d", value):
        raise click.BadParameter("expected MM/YY")
    return value


@issuer.command("add-account")
@home_option
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The card manager's ledger. Default: HOME/parties/issuer.sqlite, the one "
                   "`nettx issuer serve` uses without --db.")
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
def issuer_add_account(home: Path, db: Path | None, card_number: str, expiry: str, holder: str,
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
@click.option("--db", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The card manager's ledger. Default: HOME/parties/issuer.sqlite.")
@json_option
@fails_cleanly
def issuer_accounts(home: Path, db: Path | None, as_json: bool) -> None:
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


# -- delivery ---------------------------------------------------------------------------------


@click.group()
def delivery() -> None:
    """The delivery company: ships approved orders to the destination only it can read."""


@delivery.command("serve")
@server_options
@fails_cleanly
def delivery_serve(key_file: Path | None, reader_spec: str | None, state: Path | None,
                   card: CardExpectation, pin: str | None,
                   listen: Endpoint, db: Path | None, window: int,
                   crash_at: str | None) -> None:
    """Ship approved orders: answer the seller with a tracking reference."""
    with key_module(key_file, reader_spec, state, pin, card) as keys:
        serve(DeliveryServer(keys, config_of(listen, window, crash_at),
                             party_db(card.home, "delivery", db)))


# -- the holder -------------------------------------------------------------------------------


def exposure(ctx: click.Context, param: click.Parameter,
             value: tuple[str, ...]) -> frozenset[tuple[OrderField, Party]]:
    accepted = set()
    for spec in value:
        field_name, _, party = spec.partition(":")
        try:
            accepted.add((OrderField(field_name), Party(party)))
        except ValueError:
            raise click.BadParameter(f"{spec!r}: expected FIELD:PARTY, e.g. "
                                     f"card_number:seller") from None
    return frozenset(accepted)


def ask_holder(quote: Quote) -> bool:
    """y/N on the terminal: anything but an explicit yes is a no."""
    console.print(f"  seller    {quote.seller}\n  delivery  {quote.delivery}\n"
                  f"  card mgr  {quote.issuer}\n  amount    [bold]{quote.amount}[/]")
    return click.confirm(f"  pay {quote.amount} to {quote.seller}?", default=False)


@click.command()
@reader_options
@card_auth_options
@click.option("--seller", "seller_at", required=True, callback=endpoint, metavar="HOST:PORT")
@click.option("--item", "items", multiple=True, required=True, metavar="NUMBER[:QTY]")
@secret_options(CARD_NUMBER, PIN)
@click.option("--expiry", required=True, callback=expiry, help="MM/YY")
@click.option("--name", required=True, help="The holder's name.")
@click.option("--address", default="", help="The holder's address.")
@click.option("--phone", default="")
@click.option("--fax", default="")
@click.option("--deliver-to", required=True, help="Destination (may differ from the address).")
@click.option("--payment", default="full", show_default=True, help="full | instalments:N")
@click.option("--seller-id", required=True, callback=identifier,
              help="The seller you mean to pay: a form that is not that seller's (by what it "
                   "names or by its MAC, which your card checks) is refused.")
@click.option("--issuer-id", required=True, callback=identifier,
              help="Your card manager (card issuer): a seller naming another is refused.")
@click.option("--max-amount", metavar="AMOUNT",
              help="The most you agree to pay, in the form's currency (e.g. 27.90). Required "
                   "when stdin is not a terminal (a terminal asks y/N instead); a larger "
                   "amount is refused before the card seals anything.")
@click.option("--accept-exposure", "exposures", multiple=True, callback=exposure,
              metavar="FIELD:PARTY",
              help="Agree to a policy exposure the seller's form marks, e.g. "
                   "card_number:seller. Any other exposure makes the form refused.")
@click.option("--wait", type=click.IntRange(0, 3600), default=30, show_default=True,
              help="Seconds to keep asking for the outcome of an order still pending.")
@json_option
@fails_cleanly
def buy(reader_spec: str | None, state: Path | None, card: CardExpectation,
        seller_at: Endpoint, items: tuple[str, ...],
        card_number: str, expiry: str, name: str, address: str, phone: str, fax: str,
        deliver_to: str, payment: str, pin: str, seller_id: str, issuer_id: str,
        max_amount: str | None, exposures: frozenset[tuple[OrderField, Party]],
        wait: int, as_json: bool) -> None:
    """Buy from a seller with the card: confirm the parties, seal the parts on the card,
    send the envelope, and check the receipts.

    The card number and the PIN are never arguments: NETTX_CARD_NUMBER and NETTX_PIN,
    --card-number-file / --pin-file, --card-number-fd / --pin-fd, or hidden prompts.

    Exit status: 0 completed, 3 declined by the card manager, 1 failed or still pending."""
    try:
        order = Order(holder_name=name, holder_address=address, holder_phone=phone,
                      holder_fax=fax, card_number=card_number, card_expiry=expiry,
                      destination=deliver_to, lines=parse_lines(items), payment_type=payment)
    except OrderError as exc:
        raise click.BadParameter(str(exc)) from exc
    interactive = sys.stdin.isatty()
    if max_amount is None and not interactive:
        raise click.UsageError("not on a terminal: state the most you agree to pay with "
                               "--max-amount (e.g. --max-amount 27.90)")
    # with --json, stdout carries the outcome alone: the narration goes to stderr
    say = err_console if as_json else console
    with open_card(reader_spec, state) as reader:
        session = authenticated_session(reader, card)
        client = HolderClient(session, pin, seller_at.host, seller_at.port,
                              narrate=lambda msg: say.print(f"  {msg}"),
                              seller=seller_id, issuer=issuer_id, accept=exposures,
                              max_amount=max_amount,
                              approve=ask_holder if interactive else None)
        outcome = client.buy(order)
        if outcome.status == "pending" and client.last_sealed is not None and wait > 0:
            say.print(f"  pending ({outcome.reason}); asking again for up to {wait} s")
            outcome = client.wait_for_outcome(client.last_sealed, timeout=wait)
    if as_json:
        print_json({"order_id": outcome.order_id.hex(), "status": outcome.status,
                    "reason": outcome.reason, "amount": outcome.amount,
                    "currency": outcome.currency or None,
                    "amount_text": None if outcome.money is None else str(outcome.money),
                    "tracking": outcome.tracking,
                    "verified": [str(p) for p in sorted(outcome.verified)]})
    else:
        console.print(outcome_table(outcome))
    if not outcome.approved:
        sys.exit(3 if outcome.status == "declined" else 1)


def outcome_table(outcome: Outcome) -> Table:
    table = Table("field", "value", title=f"order {outcome.order_id.hex()}")
    table.add_row("status", outcome.status)
    table.add_row("reason", outcome.reason)
    if outcome.money is not None:
        table.add_row("amount", str(outcome.money))
    if outcome.tracking:
        table.add_row("tracking", outcome.tracking)
    table.add_row("receipts verified by the card",
                  ", ".join(sorted(outcome.verified))
                  or "none: the seller's word only (no charge was made, it says)")
    return table
