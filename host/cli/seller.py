"""`nettx seller serve`: the seller's server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from host.centre.pairing import CardExpectation
from host.cli.kit import (
    fails_cleanly,
    identifier,
)
from host.cli.partyopts import config_of, endpoint, key_module, party_db, serve, server_options
from host.errors import PolicyError
from host.parties.seller import Endpoint, SellerConfig, SellerServer, flow_log
from host.protocol.order import (
    DEFAULT_POLICY,
    OrderForm,
    PartitionPolicy,
    load_catalogue,
)
from host.storage.location import Location


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
@click.option("--flow", is_flag=True,
              help="Log every message of an order as FIG. 1 draws it (FLOW lines, which "
                   "`nettx demo` shows). Off by default: at ~20 lines an order it is a "
                   "noticeable part of the seller's work.")
@fails_cleanly
def seller_serve(key_file: Path | None, reader_spec: str | None, state: Path | None,
                 card: CardExpectation, pin: str | None,
                 listen: Endpoint, db: Location | None, window: int, crash_at: str | None,
                 catalogue: Path, issuer_at: Endpoint, issuer_id: str, delivery_at: Endpoint,
                 delivery_id: str, flow: bool) -> None:
    """Serve the order form; forward each order's parts to the card manager and, once it
    approves, to the delivery company."""
    if flow:  # its lines are DEBUG records: this logger alone lets them through
        flow_log.setLevel(logging.DEBUG)
    with key_module(key_file, reader_spec, state, pin, card) as keys:
        form = read_form_file(catalogue, keys.identifier, issuer_id, delivery_id)
        serve(SellerServer(keys, config_of(listen, window, crash_at),
                           SellerConfig(form, issuer_at, delivery_at,
                                        party_db(card.home, "seller", db))))
