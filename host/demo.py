"""`nettx demo`: the card's life on the embedded reader, narrated.

The centre issues rows; a blank virtual card is manufactured, served by its own process to
the embedded reader, personalised and locked; the holder selects it, verifies the PIN, and
has the card seal a message for the seller, whose row sits in a software security module.
The seller opens it: both sides derived the same pair key without exchanging anything.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from host.authority import Authority
from host.cardaccess import open_card
from host.personalisation import issue_onto_card
from host.softcard import software_card
from terminal.errors import ApduError, WrongPinError
from terminal.session import CardSession

HOLDER = "holder:alice@example.org"
SELLER = "seller:shop.example"
ISSUER = "issuer:card-manager.example"
PIN, PUK = "2468", "13572468"


def run_demo(console: Console, home: Path | None, k: int) -> None:
    with contextlib.ExitStack() as stack:
        if home is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nettx-demo-")))
        _run(console, home, k)


def _step(console: Console, text: str) -> None:
    console.print(f"[bold cyan]>[/] {text}")


def _run(console: Console, home: Path, k: int) -> None:
    centre = Authority(home)
    t = time.perf_counter()
    centre.init(k, force=True)
    _step(console, f"centre: master matrix k = {k} generated in {time.perf_counter() - t:.2f}s")

    t = time.perf_counter()
    rows = centre.issue([SELLER, ISSUER])
    _step(console, f"centre: rows issued for {SELLER} and {ISSUER} "
                   f"({(time.perf_counter() - t) * 1000:.0f} ms, one matrix product)")

    state = home / "alice.card.json"
    serial = centre.manufacture_card(state)
    _step(console, f"factory: blank card {serial.hex()} (transport key diversified from the "
                   f"centre's) -> {state.name}")

    with open_card(None, state, log_path=home / "card.log") as reader:
        atr = reader.power_on()
        _step(console, f"embedded reader: card process connected; ATR {atr.hex(' ').upper()}")
        session = CardSession(reader)

        issue_onto_card(centre, session, HOLDER, PIN, PUK)
        _step(console, f"centre: card personalised for {HOLDER} over a MACed session "
                       "(INITIALIZE UPDATE, STORE DATA x4, SET STATUS) and locked for good")

        reader.reset()
        info = session.select()
        table = Table("public data (SELECT / FCI)", "value")
        for name, value in (("holder", info.holder_id), ("serial", info.serial.hex()),
                            ("lifecycle", info.lifecycle.name.lower()), ("k", str(info.k)),
                            ("PIN tries", f"{info.pin_tries}/{info.pin_max}"),
                            ("row", "write-only: no command reads it")):
            table.add_row(name, value or "-")
        console.print(table)

        try:
            session.verify_pin("0000")
        except WrongPinError as err:
            _step(console, f"VERIFY 0000 -> {err.sw:04X}: wrong PIN, {err.tries_left} tries left")
        session.verify_pin(PIN)
        _step(console, "VERIFY with the right PIN -> 9000 (try counter restored)")

        try:
            session.get_data(0xDF11)
        except ApduError as err:
            _step(console, f"GET DATA of the row object DF11 -> {err.sw:04X}: it never leaves")

        session.set_peer(SELLER)
        _step(console, f"MANAGE SECURITY ENVIRONMENT peer = {SELLER}: the card evaluates its "
                       f"row at x({SELLER}) and derives the pair key inside")

        seller = software_card(SELLER, rows[SELLER])
        seller.set_peer(HOLDER)
        session.prove_to(seller)
        seller.prove_to(session)
        _step(console, "confirmation (claim 7): seller GET CHALLENGE -> card INTERNAL "
                       "AUTHENTICATE -> seller EXTERNAL AUTHENTICATE 9000, and the reverse")

        message = b"order 1: 2 x item 1001, EUR 42.00"
        header = b"nettx demo header v1"
        sealed = session.encrypt(message, aad=header, context=b"order-1")
        _step(console, f"PSO ENCIPHER on the card: {len(message)} bytes -> sealed box of "
                       f"{len(sealed)} bytes (ATC {int.from_bytes(sealed[1:5], 'big')}, "
                       "header bound as associated data)")

        opened = seller.decrypt(sealed, aad=header, context=b"order-1")
        _step(console, f"seller's security module opens it: {opened.decode()!r}")

        tampered = bytearray(sealed)
        tampered[-1] ^= 1
        try:
            seller.decrypt(bytes(tampered), aad=header, context=b"order-1")
        except ApduError as err:
            _step(console, f"one flipped bit -> {err.sw:04X}: authentication tag rejected")

        issuer = software_card(ISSUER, rows[ISSUER])
        issuer.set_peer(HOLDER)
        try:
            issuer.decrypt(sealed, aad=header, context=b"order-1")
        except ApduError as err:
            _step(console, f"the card manager cannot read the seller's part -> {err.sw:04X}")

        same = centre.pair_key(HOLDER, SELLER) == centre.pair_key(SELLER, HOLDER)
        _step(console, f"centre check: K(holder, seller) == K(seller, holder): {same}")
    console.print("[bold green]demo complete[/]")
