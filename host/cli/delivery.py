"""`nettx delivery serve`: the delivery company's server."""

from __future__ import annotations

from pathlib import Path

import click

from host.centre.pairing import CardExpectation
from host.cli.kit import (
    fails_cleanly,
)
from host.cli.partyopts import config_of, key_module, party_db, serve, server_options
from host.parties.delivery import DeliveryServer
from host.parties.seller import Endpoint
from host.storage.location import Location


@click.group()
def delivery() -> None:
    """The delivery company: ships approved orders to the destination only it can read."""


@delivery.command("serve")
@server_options
@fails_cleanly
def delivery_serve(key_file: Path | None, reader_spec: str | None, state: Path | None,
                   card: CardExpectation, pin: str | None,
                   listen: Endpoint, db: Location | None, window: int,
                   crash_at: str | None) -> None:
    """Ship approved orders: answer the seller with a tracking reference."""
    with key_module(key_file, reader_spec, state, pin, card) as keys:
        serve(DeliveryServer(keys, config_of(listen, window, crash_at),
                             party_db(card.home, "delivery", db)))
