"""`nettx demo`: the transaction of EP 0791901, end to end, narrated.

1. The centre issues rows; a blank virtual card, served by its own process to the embedded
   reader, is personalised for the holder and locked.
2. The seller, the card manager and the delivery company start as real processes on loopback,
   each with its row in a software security module.
3. The holder buys two items: the card confirms the three parties, seals one part for each,
   and the envelope goes to the seller. The flow of FIG. 1 is replayed from the seller's log,
   and each party's database shows which fields it could read.
4. The attacks the system stops, each rejected with its reason.

With `--db postgresql://...` the honest parties keep their stores in that PostgreSQL database
(each store in a schema of its own) instead of SQLite files in the home, and the card manager
and the seller run as two instances each on it: the purchase goes through the first pair, the
replayed and the swapped envelopes through the second, which answers from what the first
recorded. The attackers' own parties (an impostor card manager, a rogue seller) keep SQLite
files in the home: they are other organisations' systems, not part of this deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
from rich.columns import Columns
from rich.console import Console
from rich.table import Table

from card_applet.sw import tries
from card_applet.vocabulary import PersoObject
from host.centre.authority import Authority, write_row_file
from host.centre.pairing import Keyring
from host.centre.personalisation import issue_onto_card
from host.cli.cardaccess import open_card
from host.cli.kit import fails_cleanly, global_value, secure_home
from host.cli.partyproc import PartyProcess
from host.errors import PolicyError, TransactionError
from host.parties.connection import Connection
from host.parties.holder import HolderClient
from host.parties.keymodule import KeyModule
from host.protocol import codec, envelope
from host.protocol.envelope import Envelope
from host.protocol.messages import Form, FormRequest, OrderOutcome, expect
from host.protocol.order import Order, OrderField, OrderForm, Party
from host.protocol.wire import MessageType, frame
from host.storage.contents import dump, read_views
from host.storage.ledger import LEDGER, Account, Ledger
from host.storage.location import Location, is_postgresql
from host.storage.order_book import ORDERS
from host.storage.shipments import SHIPMENTS
from terminal.errors import ApduError, NettxError, WrongPinError
from terminal.session import CardSession

HOLDER = "holder:alice@example.org"
SELLER = "seller:shop.example"
ISSUER = "issuer:bank.example"
DELIVERY = "delivery:post.example"
IMPOSTOR = "issuer:impostor.example"
ROGUE_SELLER = "seller:rogue.example"  # a genuine seller, not the one Alice means to pay
ROGUE_DELIVERY = "delivery:rogue.example"  # a genuine delivery row, an on-path attacker's
MAX_AMOUNT = "100.00"  # EUR: the demo runs unattended, so it states a ceiling
PIN, PUK = "2468", "13572468"
CARD_NUMBER, EXPIRY = "4970101234567890", "09/29"
CATALOGUE = {"currency": "EUR", "items": [
    {"number": "A-100", "name": "smart card reader", "unit_price": 2490},
    {"number": "B-200", "name": "blank JavaCards (10)", "unit_price": 1250},
    {"number": "C-300", "name": "USB serial adapter", "unit_price": 890},
]}
ROLE_TITLES = {Party.SELLER: "seller", Party.ISSUER: "card manager",
               Party.DELIVERY: "delivery"}


class DemoFailed(NettxError):
    """The demo's purchase did not complete, or an attack it shows was not stopped."""

    def __init__(self, message: str) -> None:
        super().__init__(f"demo: {message}")


def run_demo(console: Console, home: Path | None, k: int, db: str | None = None) -> None:
    with contextlib.ExitStack() as stack:
        if home is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nettx-demo-")))
        Demo(console, home, k, stack, db).run()


STORES = {"seller": ORDERS, "issuer": LEDGER, "delivery": SHIPMENTS}


class Demo:
    def __init__(self, console: Console, home: Path, k: int,
                 stack: contextlib.ExitStack, db: str | None = None) -> None:
        self.console, self.home, self.k, self.stack = console, home, k, stack
        self.db = db  # a PostgreSQL URL for the honest parties' stores, else SQLite files
        # two instances of the card manager and of the seller share a PostgreSQL database
        self.instances = 1 if db is None else 2

    def store(self, role: str) -> Location:
        """Where the honest party `role` keeps its store."""
        return self.db if self.db is not None else self.home / f"{role}.sqlite"

    def step(self, text: str) -> None:
        self.console.print(f"[bold cyan]>[/] {text}")

    def run(self) -> None:
        self.console.rule("1. the centre and the card")
        rows = self.issue_rows()
        with open_card(None, self.home / "alice.card.json",
                       log_path=self.home / "card.log") as reader:
            card = CardSession(reader)
            self.personalise(card)
            self.console.rule("2. the parties start")
            seller_port = self.start_parties()
            self.console.rule("3. the holder buys two items")
            client = HolderClient(card, PIN, "127.0.0.1", seller_port,
                                  narrate=lambda msg: self.step(f"holder's terminal: {msg}"),
                                  seller=SELLER, issuer=ISSUER, max_amount=MAX_AMOUNT)
            first = self.purchase(client)
            self.console.rule("4. what the system stops")
            self.attacks(client, first, rows)
        self.console.print("[bold green]demo complete[/]")

    # -- 1 --------------------------------------------------------------------------------------

    def clear_previous_run(self) -> None:
        """A kept --home is reused: the centre is re-initialised, so last run's card and
        databases (which belong to the old master) go too."""
        for pattern in ("*.card.json", "*.sqlite", "*.sqlite-wal", "*.sqlite-shm", "*.log",
                        "*.row.json", "*catalogue.json"):
            for path in self.home.glob(pattern):
                path.unlink()
        if self.db is not None:
            # the database is the demo's as the home is: last run's stores go too
            from host.storage.postgresql import drop_stores

            drop_stores(self.db, list(STORES.values()))

    def issue_rows(self) -> dict[str, list[int]]:
        # 0700 whatever the caller's umask: the home gets rows, a card and three databases
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.clear_previous_run()
        centre = Authority(self.home)
        t = time.perf_counter()
        centre.init(self.k, force=True)
        self.centre = centre
        rows = centre.issue([SELLER, ISSUER, DELIVERY, IMPOSTOR, ROGUE_SELLER, ROGUE_DELIVERY])
        self.step(f"centre: master k = {self.k}; rows for {SELLER}, {ISSUER}, {DELIVERY} "
                  f"(and {IMPOSTOR}, {ROGUE_SELLER}, {ROGUE_DELIVERY}) in "
                  f"{time.perf_counter() - t:.2f} s")
        for ident, row in rows.items():
            write_row_file(self.row_file(ident), ident, row)
        serial = centre.manufacture_card(self.home / "alice.card.json")
        self.step(f"factory: blank card {serial.hex()}")
        return rows

    def row_file(self, ident: str) -> Path:
        return self.home / (ident.replace(":", "_") + ".row.json")

    def personalise(self, card: CardSession) -> None:
        card.reader.power_on()
        pairing = issue_onto_card(self.centre, card, HOLDER, PIN, PUK,
                                  keep=Keyring(self.home).save)
        self.step(f"centre: card personalised for {HOLDER} over a MACed session and locked")
        card.authenticate_card(pairing)
        self.step("holder's terminal: the card proved it holds its card authentication key "
                  "(INTERNAL AUTHENTICATE, key 81): only now may it get the PIN")
        try:
            card.verify_pin("0000")
        except WrongPinError as err:
            self.step(f"VERIFY 0000 -> {err.sw:04X}: wrong PIN, {tries(err.tries_left)} left")
        try:
            card.get_data(PersoObject.ROW)
        except ApduError as err:
            self.step(f"GET DATA of the row {PersoObject.ROW:04X} -> {err.sw:04X}: the row "
                      f"never leaves the card")

    # -- 2 --------------------------------------------------------------------------------------

    def start_party(self, role: str, ident: str, *args: str, db: str | None = None,
                    row_file: Path | None = None, instance: int = 0) -> PartyProcess:
        """The honest `role`'s instance `instance` on its store, or, with `db`, another
        organisation's party on a SQLite file of its own in the home."""
        base = db or role
        store = self.home / f"{base}.sqlite" if db else self.store(role)
        log = base if self.instances == 1 or db else f"{role}-{instance + 1}"
        proc = PartyProcess(role, ["--key", str(row_file or self.row_file(ident)),
                                   "--db", str(store), *args], self.home / f"{log}.log")
        self.stack.callback(proc.stop)
        where = "" if db or self.db is None else (
            f" (instance {instance + 1} of {self.instances}, on PostgreSQL)"
            if role != "delivery" else " (on PostgreSQL)")
        self.step(f"{role} {ident}: pid {proc.pid}, listening on 127.0.0.1:{proc.port}{where}")
        return proc

    def start_parties(self) -> int:
        ledger = Ledger(self.store("issuer"))
        ledger.add_account(Account(CARD_NUMBER, HOLDER, "Alice Martin", "+33 1 23 45 67 89",
                                   EXPIRY, 50_000))
        ledger.close()
        self.step("card manager: account for Alice's card seeded (balance 500.00 EUR)")
        issuers = [self.start_party("issuer", ISSUER, instance=i)
                   for i in range(self.instances)]
        delivery = self.start_party("delivery", DELIVERY)
        (self.home / "catalogue.json").write_text(json.dumps(CATALOGUE, indent=1))
        self.issuer_port, self.delivery_port = issuers[0].port, delivery.port
        # seller instance i asks card manager instance i: each pair is one path for an order
        sellers = [self.start_party("seller", SELLER, *self.seller_args(issuer.port),
                                    instance=i) for i, issuer in enumerate(issuers)]
        self.seller_log = sellers[0].log_path
        # where the replayed and swapped envelopes go: the other instances, if there are
        self.other_seller_port = sellers[-1].port
        return sellers[0].port

    def seller_args(self, issuer_port: int, catalogue: str = "catalogue.json") -> list[str]:
        return ["--flow", "--catalogue", str(self.home / catalogue),  # show_flow reads it
                "--issuer", f"127.0.0.1:{issuer_port}", "--issuer-id", ISSUER,
                "--delivery", f"127.0.0.1:{self.delivery_port}", "--delivery-id", DELIVERY]

    # -- 3 --------------------------------------------------------------------------------------

    def order(self) -> Order:
        return Order(holder_name="Alice Martin", holder_address="1 rue de la Paix, 75002 Paris",
                     holder_phone="+33 1 23 45 67 89", card_number=CARD_NUMBER,
                     card_expiry=EXPIRY, destination="Alice's office, 5 avenue Foch, Lyon",
                     lines=(("A-100", 1), ("B-200", 2)))

    def purchase(self, client: HolderClient) -> envelope.SealedOrder:
        log_offset = self.seller_log.stat().st_size
        with Connection("127.0.0.1", client.port) as conn:
            _form, sealed = client.prepare(conn, self.order())
            outcome = client.send(conn, sealed)
        time.sleep(0.2)  # the seller's log line for the outcome may trail the reply
        self.show_flow(log_offset)
        table = Table("outcome", "value", title=f"order {outcome.order_id.hex()}")
        table.add_row("status", outcome.status)
        table.add_row("amount", str(outcome.money or "-"))
        table.add_row("tracking", outcome.tracking or "-")
        table.add_row("receipts opened by the card",
                      ", ".join(ROLE_TITLES[p] for p in sorted(outcome.verified)))
        self.console.print(table)
        if not outcome.approved:
            raise DemoFailed(f"the purchase did not complete: {outcome.reason}")
        self.show_visibility(sealed.header.order_id)
        return sealed

    def show_flow(self, offset: int) -> None:
        table = Table("FIG. 1", "from", "", "to", "message", title="the flow, from the "
                      "seller's log")
        with open(self.seller_log, encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            for line in log:
                match = re.search(r"FLOW (\w) (\S+) -> (\S+): (.*)", line)
                if match:
                    arrow, source, target, what = match.groups()
                    table.add_row(arrow, source, "->", target, what)
        self.console.print(table)

    def show_visibility(self, order_id: bytes) -> None:
        views = {party: read_views(self.store(party.value), STORES[party.value])
                 for party in Party}
        tables = []
        for party in Party:
            readable = set(views[party].get(order_id, []))
            table = Table("order field", "", title=f"{ROLE_TITLES[party]} decrypted")
            for f in OrderField:
                table.add_row(f.value, "[green]read[/]" if f.value in readable
                              else "[red]cannot read[/]")
            tables.append(table)
        self.step("what each party decrypted, from its own database:")
        self.console.print(Columns(tables))
        seller_db = dump(self.store("seller"), ORDERS)
        issuer_db = dump(self.store("issuer"), LEDGER)
        self.step(f"the card number anywhere in the seller's database: "
                  f"{CARD_NUMBER in seller_db}; the destination anywhere in the card "
                  f"manager's: {'avenue Foch' in issuer_db}")

    # -- 4 --------------------------------------------------------------------------------------

    def refused(self, attack: str, reason: str) -> None:
        self.console.print(f"[bold red]x[/] {attack}\n    [red]refused:[/] {reason}")

    def attack(self, what: str, expected: str, run: Callable[[], str | None]) -> None:
        """Run one attack; it must be refused with a reason naming `expected`, or the demo
        fails: the output shows what the system stops, not what it is hoped to stop."""
        try:
            reason = run()
        except (TransactionError, PolicyError) as exc:
            reason = str(exc)
        if reason is None or expected not in reason:
            raise DemoFailed(f"NOT STOPPED: {what} ({reason or 'accepted'})")
        self.refused(what, reason)

    def attacks(self, client: HolderClient, first: envelope.SealedOrder,
                rows: dict[str, list[int]]) -> None:
        ledger = Ledger(self.store("issuer"))
        balance_before = ledger.account(CARD_NUMBER).balance  # type: ignore[union-attr]
        ledger.close()

        def seller_reads_card_number() -> None:
            seller_keys = KeyModule.software(SELLER, rows[SELLER], pool=1)
            header = first.envelope.header
            asyncio.run(seller_keys.open(HOLDER, first.envelope.parts[Party.ISSUER],
                                         envelope.part_aad(Party.ISSUER, header),
                                         envelope.context("part", first.header.order_id),
                                         what="card manager's part"))

        self.attack("the seller opens the card manager's part to read the card number",
                    "forged", seller_reads_card_number)
        self.attack("the seller's form grants it the card number", "card_number",
                    lambda: str(OrderForm.from_cbor(leaky_form())) and None)

        other = "" if self.instances == 1 else ", at the other seller instance"

        def replay() -> str | None:
            with Connection("127.0.0.1", self.other_seller_port) as conn:
                conn.send_raw(frame(MessageType.ORDER, envelope=first.envelope.to_cbor()))
                client.read_outcome(expect(conn.receive(), OrderOutcome), first)
            return None

        self.attack(f"the first envelope, replayed{other}", "replay", replay)

        def swap() -> str | None:
            with Connection("127.0.0.1", self.other_seller_port) as conn:
                _form, second = client.prepare(conn, self.order())
                swapped = Envelope(second.envelope.header,
                                   {**second.envelope.parts,
                                    Party.ISSUER: first.envelope.parts[Party.ISSUER]})
                conn.send_raw(frame(MessageType.ORDER, envelope=swapped.to_cbor()))
                outcome = client.read_outcome(expect(conn.receive(), OrderOutcome), second)
            return None if outcome.approved else f"order 2 {outcome.status}: {outcome.reason}"

        self.attack(f"the card manager's part of order 1 swapped into order 2{other}",
                    "forged", swap)

        # a card manager impersonated: a real row, for another identifier
        impostor_row = self.home / "impostor-claiming-issuer.row.json"
        write_row_file(impostor_row, ISSUER, rows[IMPOSTOR])
        fake = self.start_party("issuer", ISSUER, db="impostor", row_file=impostor_row)
        tricked = self.start_party("seller", SELLER, *self.seller_args(fake.port),
                                   db="tricked-seller")
        tricked_client = HolderClient(client.card, PIN, "127.0.0.1", tricked.port,
                                      seller=SELLER, issuer=ISSUER, max_amount=MAX_AMOUNT)
        self.attack("an impostor answers as the card manager", "unconfirmed",
                    lambda: str(tricked_client.buy(self.order())) and None)

        # a genuine seller, at another address, charging 300.00 EUR for a card reader
        (self.home / "rogue-catalogue.json").write_text(json.dumps({
            "currency": "EUR",
            "items": [{"number": "A-100", "name": "smart card reader", "unit_price": 30_000}]}))
        rogue = self.start_party("seller", ROGUE_SELLER,
                                 *self.seller_args(self.issuer_port, "rogue-catalogue.json"),
                                 db="rogue-seller")
        rogue_client = HolderClient(client.card, PIN, "127.0.0.1", rogue.port, seller=SELLER,
                                    issuer=ISSUER, max_amount="1000.00")
        self.attack(f"{ROGUE_SELLER} (a genuine seller row) answers at another address and "
                    f"asks 300.00 EUR", f"is {ROGUE_SELLER}, not {SELLER}",
                    lambda: str(rogue_client.buy(self.order())) and None)

        def swapped_delivery() -> None:
            """What an on-path attacker would hand the holder's terminal: the honest seller's
            form, MAC and all, with its own delivery company in it."""
            nonce = secrets.token_bytes(envelope.FORM_NONCE_SIZE)
            with Connection("127.0.0.1", client.port) as conn:
                reply = conn.request(FormRequest(client.holder, nonce), Form)
            form = codec.decode(reply.form)
            form["delivery"] = ROGUE_DELIVERY
            client.verify_form(codec.encode(form), reply.mac, nonce)

        self.attack(f"an on-path attacker swaps the delivery company in the form for "
                    f"{ROGUE_DELIVERY}, to read the destination", "forged", swapped_delivery)

        ledger = Ledger(self.store("issuer"))
        balance = ledger.account(CARD_NUMBER).balance  # type: ignore[union-attr]
        debited = ledger.debits(first.header.order_id)
        ledger.close()
        if balance != balance_before:
            raise DemoFailed(f"the attacks moved money: {balance_before} -> "
                                           f"{balance}")
        # exact, whichever instance decided what: order 1 approved once, at its price
        price = sum(item["unit_price"] for item in CATALOGUE["items"]  # type: ignore[misc]
                    for number, count in self.order().lines if item["number"] == number
                    for _ in range(count))
        if debited != 1 or balance != 50_000 - price:
            raise DemoFailed(f"the ledger is off: order 1 approved {debited} times, balance "
                             f"{balance} where 50000 - {price} was due")
        self.step(f"ledger: Alice's balance {balance / 100:.2f} EUR = 500.00 - "
                  f"{(50_000 - balance) / 100:.2f} for order 1; none of the attacks moved it")


def leaky_form() -> dict[str, object]:
    """The order form a greedy seller would serve: the card number in its own part."""
    return {
        "seller": SELLER, "issuer": ISSUER, "delivery": DELIVERY, "currency": "EUR",
        "catalogue": [["A-100", "smart card reader", 2490]],
        "policy": {"grants": {
            "seller": ["items", "amount", "holder_name", "card_number"],
            "issuer": ["card_number", "card_expiry", "amount"],
            "delivery": ["destination"]}, "exposures": []},
    }


# -- the command ----------------------------------------------------------------------------


def _demo_home(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    value = value or global_value(ctx, "home")
    return None if value is None else secure_home(value)


def _postgresql_url(ctx: click.Context, param: click.Parameter,
                    value: str | None) -> str | None:
    if value is not None and not is_postgresql(value):
        # without --db the demo runs on SQLite files in its home already
        raise click.BadParameter("takes a postgresql:// URL")
    return value


@click.command()
@click.option("--home", type=click.Path(path_type=Path), callback=_demo_home,
              help="Keep the demo's files here (default: a temporary directory); kept 0700, "
                   "every file 0600.")
@click.option("--k", "k", type=click.IntRange(2, 4096), default=512, show_default=True)
@click.option("--db", callback=_postgresql_url, metavar="URL",
              help="Keep the seller's, the card manager's and the delivery company's stores "
                   "in this PostgreSQL database (postgresql://USER@HOST:PORT/DATABASE), with "
                   "two instances of the card manager and of the seller on it. The demo "
                   "drops and recreates its stores there: give it a database of its own.")
@fails_cleanly
def demo(home: Path | None, k: int, db: str | None) -> None:
    """Personalise a virtual card on the embedded reader and use it, printing each step."""
    # a narration, not a result: laid out for a terminal's width even through a pipe (the
    # whole-width console would draw its rules 10 000 columns long)
    run_demo(Console(), home, k, db)
