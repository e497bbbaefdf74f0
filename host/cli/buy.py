"""`nettx buy`: the holder orders from a seller with the card."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from host.centre.pairing import CardExpectation, authenticated_session
from host.cli.cardaccess import open_card
from host.cli.kit import (
    card_auth_options,
    console,
    err_console,
    fails_cleanly,
    identifier,
    json_option,
    print_json,
    reader_options,
)
from host.cli.partyopts import endpoint, expiry
from host.cli.secretopts import CARD_NUMBER, PIN, secret_options
from host.errors import OrderError
from host.parties.holder import HolderClient, Outcome, Quote
from host.parties.seller import Endpoint
from host.protocol.order import (
    Order,
    OrderField,
    Party,
    parse_lines,
)


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
