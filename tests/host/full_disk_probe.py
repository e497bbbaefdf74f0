"""Run inside a private mount namespace by test_storage_full_disk.py: each party's database
on its own small tmpfs (already mounted at HOME/issuer, HOME/delivery, HOME/seller). Fills one
disk at a time to the last byte and buys; prints one JSON line of what happened.

    python -m tests.host.full_disk_probe HOME CENTRE_DIR
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from card_applet import blom
from card_applet.applet import Applet
from card_applet.state import FileStore
from host.centre.authority import Authority
from host.centre.personalisation import personalise
from host.errors import TransactionError
from host.parties.holder import HolderClient
from terminal.inprocess import InProcessReader
from terminal.session import CardSession
from tests.host.market import HOLDER, SELLER, Market, issue_market_rows, order

PIN, PUK = "1234", "12345678"


def fill(directory: Path) -> Path:
    """Write until the disk says ENOSPC."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
    return filler


def count(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def main(home: Path, centre_dir: Path) -> dict[str, object]:
    authority = Authority(centre_dir / "centre")
    authority.init(k=8)
    rows = issue_market_rows(authority)
    card_path = centre_dir / "holder.json"
    authority.manufacture_card(card_path)
    (row,) = authority.rows_for([blom.x_of(HOLDER)])
    card = CardSession(InProcessReader(Applet(FileStore(card_path))))
    card.authenticate_card(personalise(card, authority.transport_master, HOLDER, row, PIN, PUK))

    # the market's databases, each on its party's own disk
    market = Market(authority, rows, home)
    for name, role in (("ledger.sqlite", "issuer"), ("ship.sqlite", "delivery"),
                       ("orders.sqlite", "seller")):
        (home / name).symlink_to(home / role / name)
    result: dict[str, object] = {}
    market.start()
    try:
        client = HolderClient(card, PIN, "127.0.0.1", market.ports["seller"], seller=SELLER,
                              max_amount="1000000")
        result["warm-up"] = client.buy(order()).status
        for role in ("delivery", "issuer", "seller"):
            filler = fill(home / role)
            try:
                outcome = client.buy(order())
                told: str = outcome.status
                sealed = client.last_sealed
            except TransactionError as exc:
                told, sealed = f"error {exc.code}", None
            time.sleep(0.5)  # the seller retries meanwhile
            still = client.status(sealed).status if sealed is not None else None
            filler.unlink()  # space comes back
            if sealed is not None:
                final = client.wait_for_outcome(sealed).status
            else:  # the order was never recorded: the holder buys again
                final = client.buy(order()).status
            result[role] = {"told": told, "meanwhile": still, "after": final}
        result["debits"] = count(home / "ledger.sqlite", "authorisations WHERE code='approved'")
        result["shipments"] = count(home / "ship.sqlite", "shipments")
        result["orders"] = count(home / "orders.sqlite", "orders")
    finally:
        market.stop()
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
