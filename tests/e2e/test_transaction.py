"""The transaction with every party a real process on loopback: `nettx buy` through the
embedded reader and through PC/SC, declines by exit status, and servers killed (kill -9 at a
named point) and restarted mid-order: the order completes once, never debits twice."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from card_applet import blom
from card_applet.applet import Applet
from card_applet.state import FileStore, read_state
from card_applet.vocabulary import ATC_BLOCK, encode_pin
from host.centre.authority import Authority, write_row_file
from host.centre.pairing import CardExpectation, Keyring, authenticated_session
from host.centre.personalisation import personalise
from host.cli.partyproc import PartyProcess
from host.errors import TransactionError
from host.parties.connection import Connection
from host.parties.holder import HolderClient, Outcome
from host.protocol.envelope import SealedOrder
from host.protocol.messages import OrderOutcome, expect
from host.protocol.order import Order
from host.protocol.wire import MessageType, frame
from terminal.inprocess import InProcessReader
from terminal.session import CardSession
from tests.e2e.portsnatch import make_fake_card, received_bytes, slow_card_env, snatching
from tests.host.market import dump

HOLDER = "holder:alice@example.org"
SELLER, ISSUER, DELIVERY = "seller:shop.example", "issuer:bank.example", "delivery:post.example"
PIN, PUK = "1234", "12345678"
CARD_NUMBER, EXPIRY, NAME = "4970101234567890", "09/29", "Alice Martin"
DESTINATION = "Alice's office, 5 avenue Foch, Lyon"
BALANCE = 50_000
CATALOGUE = {"currency": "EUR", "items": [
    {"number": "A-100", "name": "smart card reader", "unit_price": 2490},
    {"number": "B-200", "name": "blank cards", "unit_price": 1250}]}
PRICE = 2490 + 2 * 1250


# the holder's secrets travel in the environment, never in argv (every local user reads it)
SECRETS = {"NETTX_PIN": PIN, "NETTX_CARD_NUMBER": CARD_NUMBER}


def nettx(*args: str, timeout: float = 60,
          secrets: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", **(SECRETS if secrets is None else secrets)}
    return subprocess.run([sys.executable, "-m", "host.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@dataclass
class Parties:
    home: Path
    card: Path
    procs: dict[str, PartyProcess] = field(default_factory=dict)

    def row(self, ident: str) -> Path:
        return self.home / (ident.split(":")[0] + ".row.json")

    def start(self, role: str, *, crash_at: str | None = None, port: int = 0,
              card: Path | None = None) -> PartyProcess:
        ident = {"seller": SELLER, "issuer": ISSUER, "delivery": DELIVERY}[role]
        key = (["--state", str(card), "--home", str(self.home), "--holder-id", ident]
               if card else ["--key", str(self.row(ident))])
        args = [*key, "--db", str(self.home / f"{role}.sqlite")]
        if role == "seller":
            args += ["--catalogue", str(self.home / "catalogue.json"),
                     "--issuer", f"127.0.0.1:{self.procs['issuer'].port}",
                     "--issuer-id", ISSUER,
                     "--delivery", f"127.0.0.1:{self.procs['delivery'].port}",
                     "--delivery-id", DELIVERY]
        if crash_at:
            args += ["--crash-at", crash_at]
        old = self.procs.get(role)
        if old is not None:
            old.stop()
        proc = PartyProcess(role, args, self.home / f"{role}.log", port=port,
                            secrets={"NETTX_PIN": PIN} if card else None)
        self.procs[role] = proc
        return proc

    def restart(self, role: str) -> PartyProcess:
        return self.start(role, port=self.procs[role].port)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    @property
    def seller_port(self) -> int:
        return self.procs["seller"].port

    def balance(self) -> int:
        conn = sqlite3.connect(self.home / "issuer.sqlite")
        try:
            return conn.execute("SELECT balance FROM accounts WHERE card_number = ?",
                                (CARD_NUMBER,)).fetchone()[0]
        finally:
            conn.close()

    def count(self, db: str, table: str) -> int:
        conn = sqlite3.connect(self.home / db)
        try:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()


@pytest.fixture
def parties(tmp_path: Path) -> Iterator[Parties]:
    centre = Authority(tmp_path / "centre")
    centre.init(k=16)
    rows = centre.issue([SELLER, ISSUER, DELIVERY])
    p = Parties(tmp_path, tmp_path / "alice.card.json")
    for ident, row in rows.items():
        write_row_file(p.row(ident), ident, row)
    # the card manager's row on a card of its own too, for the test that serves from it
    centre.manufacture_card(tmp_path / "issuer.card.json")
    keyring = Keyring(tmp_path)  # the pairings go where `--home tmp_path` finds them
    keyring.save(personalise(
        CardSession(InProcessReader(Applet(FileStore(tmp_path / "issuer.card.json")))),
        centre.transport_master, ISSUER, rows[ISSUER], PIN, PUK))
    centre.manufacture_card(p.card)
    (holder_row,) = centre.rows_for([blom.x_of(HOLDER)])
    keyring.save(personalise(CardSession(InProcessReader(Applet(FileStore(p.card)))),
                             centre.transport_master, HOLDER, holder_row, PIN, PUK))
    (tmp_path / "catalogue.json").write_text(json.dumps(CATALOGUE))
    run = nettx("issuer", "add-account", "--db", str(tmp_path / "issuer.sqlite"),
                "--expiry", EXPIRY, "--holder", HOLDER,
                "--name", NAME, "--phone", "+33 1 23 45 67 89", "--balance", str(BALANCE))
    assert run.returncode == 0, run.stderr
    try:
        p.start("issuer")
        p.start("delivery")
        p.start("seller")
        yield p
    finally:
        p.stop()


def buy_args(p: Parties, *extra: str, expiry: str = EXPIRY,
             ceiling: str | None = "100.00") -> list[str]:
    return ["buy", "--seller", f"127.0.0.1:{p.seller_port}", "--item", "A-100",
            "--item", "B-200:2", "--expiry", expiry,
            "--name", NAME, "--phone", "+33 1 23 45 67 89", "--address", "1 rue de la Paix",
            "--deliver-to", DESTINATION, "--seller-id", SELLER,
            "--issuer-id", ISSUER, *(("--max-amount", ceiling) if ceiling else ()),
            "--home", str(p.home), "--holder-id", HOLDER, *extra]


def assert_nothing_leaked(p: Parties) -> None:
    for name in ("seller.sqlite", "seller.log"):
        assert CARD_NUMBER not in dump(p.home / name), name
    for name in ("issuer.sqlite", "issuer.log"):
        assert "avenue Foch" not in dump(p.home / name), name
    assert CARD_NUMBER in dump(p.home / "issuer.sqlite")  # the check can see a leak
    assert "avenue Foch" in dump(p.home / "delivery.sqlite")


def test_buy_through_the_embedded_reader(parties: Parties) -> None:
    # a hostile client first: the seller process answers it and keeps serving
    with socket.create_connection(("127.0.0.1", parties.seller_port), timeout=5) as sock:
        sock.sendall(b"\x00\x00\x00\x05\xff\xff\xff\xff\xff")
        assert b"malformed" in sock.recv(4096)
    run = nettx(*buy_args(parties, "--state", str(parties.card)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "completed" in run.stdout and "TRK-" in run.stdout
    assert "card manager" in run.stdout or "issuer" in run.stdout
    assert parties.balance() == BALANCE - PRICE
    assert parties.count("delivery.sqlite", "shipments") == 1
    assert_nothing_leaked(parties)


def test_buy_cannot_be_answered_by_a_racing_process(parties: Parties, tmp_path: Path) -> None:
    """Issue 10 item 1: a local process connecting to every new loopback listener while
    `nettx buy --state` starts its card (late, by the slow_card_start hook) gets nothing:
    no PIN, no part; the purchase completes with the real card."""
    fake = make_fake_card(tmp_path / "attacker", HOLDER)
    with snatching(tmp_path, fake) as finish:
        run = subprocess.run([sys.executable, "-m", "host.cli",
                              *buy_args(parties, "--state", str(parties.card))],
                             capture_output=True, text=True, timeout=90,
                             env={**slow_card_env(), **SECRETS})
        report = finish()
    stolen = received_bytes(report)
    assert report["frames"] == {}, report  # the attacker was never taken for the card
    assert encode_pin(PIN) not in stolen and CARD_NUMBER.encode() not in stolen
    assert report["connected"] == [], report  # nothing of ours listened
    assert run.returncode == 0, run.stdout + run.stderr
    assert "completed" in run.stdout
    assert parties.balance() == BALANCE - PRICE


@pytest.mark.pcscd
def test_buy_through_pcsc(parties: Parties, pcscd: object) -> None:
    from terminal.cardproc import CardProcess
    from terminal.pcsc import wait_for_card, wait_until_card_gone
    from tests.conftest import PCSC_READER

    with CardProcess(parties.card, "127.0.0.1", pcscd.port):  # type: ignore[attr-defined]
        wait_for_card(PCSC_READER).close()
        run = nettx(*buy_args(parties, "--reader", f"pcsc:{PCSC_READER}"))
    wait_until_card_gone(PCSC_READER)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "completed" in run.stdout
    assert parties.balance() == BALANCE - PRICE
    assert_nothing_leaked(parties)


def test_card_manager_with_its_row_on_a_card(parties: Parties) -> None:
    """The card manager's key operations on a card behind the embedded reader (a card
    process its `issuer serve` starts), the same applet as the software module."""
    issuer = parties.start("issuer", card=parties.home / "issuer.card.json",
                           port=parties.procs["issuer"].port)
    run = nettx(*buy_args(parties, "--state", str(parties.card)))
    assert run.returncode == 0, run.stdout + run.stderr + issuer.log_tail()
    assert "completed" in run.stdout
    assert parties.balance() == BALANCE - PRICE
    issuer.stop()  # one card, one process: its card process lets the card go first
    info = nettx("card", "info", "--state", str(parties.home / "issuer.card.json"))
    # the card manager's card sealed the authorisation MAC and the holder's receipt, from its
    # first block of counter values: this new card process starts above that block
    counter = re.search(r"transaction counter\W+(\d+)", info.stdout)
    assert counter is not None, info.stdout
    assert int(counter.group(1)) == ATC_BLOCK


def test_declined_order_exits_3(parties: Parties) -> None:
    run = nettx(*buy_args(parties, "--state", str(parties.card), expiry="10/30"))
    assert run.returncode == 3, run.stdout + run.stderr
    assert "declined" in run.stdout and "wrong expiry" in run.stdout
    assert parties.balance() == BALANCE
    assert parties.count("delivery.sqlite", "shipments") == 0


def counters_seen(p: Parties) -> list[int]:
    conn = sqlite3.connect(p.home / "issuer.sqlite")
    try:
        return [atc for (atc,) in conn.execute(
            "SELECT atc FROM counters WHERE holder = ? ORDER BY atc", (HOLDER,))]
    finally:
        conn.close()


def test_a_restarted_card_skips_its_block_and_a_repeated_counter_is_declined(
        parties: Parties, tmp_path: Path) -> None:
    """Every `nettx buy --state` runs the card in a process of its own: between two orders
    the card restarts and skips the rest of its counter block. The card manager approves the
    jump; a copy of the card's state taken between the orders (a clone) seals with the
    counters the card went on to use, and is declined."""
    first = nettx(*buy_args(parties, "--state", str(parties.card)))
    assert first.returncode == 0, first.stdout + first.stderr
    (one,) = counters_seen(parties)
    reserved = read_state(parties.card).atc_reserved
    assert one <= reserved == ATC_BLOCK  # the first order's boxes came from the first block
    clone = tmp_path / "clone.card.json"
    shutil.copy(parties.card, clone)

    second = nettx(*buy_args(parties, "--state", str(parties.card)))
    assert second.returncode == 0 and "completed" in second.stdout, second.stdout + second.stderr
    assert counters_seen(parties) == [one, one + ATC_BLOCK]  # the jump of one block: approved
    assert parties.balance() == BALANCE - 2 * PRICE

    # the clone restarts from the same reservation, so its boxes repeat the second order's
    replayed = nettx(*buy_args(parties, "--state", str(clone)))
    assert replayed.returncode == 3, replayed.stdout + replayed.stderr
    assert f"card transaction counter {one + ATC_BLOCK} seen before: a cloned card" in \
        replayed.stdout.replace("\n", " "), replayed.stdout
    assert parties.balance() == BALANCE - 2 * PRICE
    assert parties.count("delivery.sqlite", "shipments") == 2


def test_buy_off_a_terminal_needs_a_ceiling_and_keeps_to_it(parties: Parties) -> None:
    run = nettx(*buy_args(parties, "--state", str(parties.card), ceiling=None))
    assert run.returncode == 2 and "--max-amount" in run.stderr, run.stderr
    run = nettx(*buy_args(parties, "--state", str(parties.card), ceiling="49.89"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "comes to 49.90 EUR, above your ceiling of 49.89 EUR" in run.stderr
    assert "Traceback" not in run.stderr
    run = nettx(*buy_args(parties, "--state", str(parties.card), ceiling="49.90 USD"))
    assert run.returncode == 1 and "in USD" in run.stderr, run.stderr
    assert parties.count("seller.sqlite", "orders") == 0
    assert parties.balance() == BALANCE


def buy_on_a_terminal(p: Parties, answer: bytes) -> subprocess.CompletedProcess[str]:
    """`nettx buy` with stdin a terminal (a pseudo-terminal), answering its y/N question."""
    controller, terminal = os.openpty()
    try:
        os.write(controller, answer)
        return subprocess.run([sys.executable, "-m", "host.cli",
                               *buy_args(p, "--state", str(p.card), ceiling=None)],
                              stdin=terminal, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "COLUMNS": "200", **SECRETS})
    finally:
        os.close(terminal)
        os.close(controller)


def test_buy_on_a_terminal_shows_the_amount_and_asks(parties: Parties) -> None:
    run = buy_on_a_terminal(parties, b"n\n")
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"pay 49.90 EUR to {SELLER}?" in run.stdout and DELIVERY in run.stdout
    assert "did not approve" in run.stderr
    assert parties.count("seller.sqlite", "orders") == 0
    run = buy_on_a_terminal(parties, b"y\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "49.90 EUR" in run.stdout and "completed" in run.stdout
    assert parties.balance() == BALANCE - PRICE


def test_buy_refuses_bad_arguments_in_one_line(parties: Parties) -> None:
    run = nettx(*buy_args(parties, "--state", str(parties.card), expiry="13/29"))
    assert run.returncode == 2 and "MM/YY" in run.stderr
    run = nettx("buy", "--seller", "nowhere", "--item", "A",
                "--expiry", "01/30", "--name", "x", "--deliver-to", "y")
    assert run.returncode == 2 and "HOST:PORT" in run.stderr
    run = nettx(*buy_args(parties, "--state", str(parties.card), "--item", "Z-999"))
    assert run.returncode == 1 and "not in" in run.stderr and "Traceback" not in run.stderr


# -- kill -9 mid-order ------------------------------------------------------------------------


def holder(p: Parties) -> HolderClient:
    card = authenticated_session(InProcessReader(Applet(FileStore(p.card))),
                                 CardExpectation(p.home, holder_id=HOLDER))
    return HolderClient(card, PIN, "127.0.0.1", p.seller_port, seller=SELLER,
                        max_amount="1000.00")


def an_order() -> Order:
    return Order(holder_name=NAME, holder_address="1 rue de la Paix",
                 holder_phone="+33 1 23 45 67 89", card_number=CARD_NUMBER,
                 card_expiry=EXPIRY, destination=DESTINATION,
                 lines=(("A-100", 1), ("B-200", 2)))


def test_issuer_killed_after_debit_completes_once(parties: Parties) -> None:
    issuer = parties.start("issuer", crash_at="after-commit", port=parties.procs["issuer"].port)
    client = holder(parties)
    outcome = client.buy(an_order())  # the seller answers while the card manager is dead
    assert outcome.status == "pending"
    issuer.proc.wait(5)
    assert parties.balance() == BALANCE - PRICE  # committed before it died
    parties.restart("issuer")
    with Connection("127.0.0.1", parties.seller_port) as conn:
        conn.send_raw(frame(MessageType.STATUS, order=outcome.order_id))
        asked = expect(conn.receive(), OrderOutcome)
    assert asked.status in ("pending", "completed")  # the seller still knows it
    final = client_wait(client, outcome.order_id)
    assert final.status == "completed", final.reason
    assert parties.balance() == BALANCE - PRICE  # the retransmission did not debit again
    assert parties.count("issuer.sqlite", "authorisations") == 1
    assert parties.count("delivery.sqlite", "shipments") == 1


def client_wait(client: HolderClient, order_id: bytes) -> Outcome:
    """The holder asks the seller until the order is final (the seller resumes it)."""
    sealed = client.last_sealed
    assert isinstance(sealed, SealedOrder) and sealed.header.order_id == order_id
    return client.wait_for_outcome(sealed, timeout=30)


def order_to_a_dying_seller(parties: Parties,
                            crash_at: str) -> tuple[HolderClient, SealedOrder]:
    """Send an order to a seller that kills itself at `crash_at`; the holder sees the
    connection drop, and the seller is dead on return."""
    seller = parties.start("seller", crash_at=crash_at, port=parties.seller_port)
    client = holder(parties)
    with Connection("127.0.0.1", parties.seller_port) as conn:
        _form, sealed = client.prepare(conn, an_order())
        conn.send_raw(frame(MessageType.ORDER, envelope=sealed.envelope.to_cbor()))
        with pytest.raises(TransactionError, match="connection-lost"):
            conn.receive()
    seller.proc.wait(5)
    return client, sealed


def test_seller_killed_after_approval_resumes_on_restart(parties: Parties) -> None:
    client, sealed = order_to_a_dying_seller(parties, "after-approval")
    parties.restart("seller")
    final = client.wait_for_outcome(sealed, timeout=30)
    assert final.status == "completed", final.reason
    assert final.verified == {"issuer", "delivery"}
    assert parties.balance() == BALANCE - PRICE
    assert parties.count("delivery.sqlite", "shipments") == 1


def test_delivery_killed_after_shipping_ships_once(parties: Parties) -> None:
    delivery = parties.start("delivery", crash_at="after-ship",
                             port=parties.procs["delivery"].port)
    client = holder(parties)
    outcome = client.buy(an_order())
    assert outcome.status == "pending"
    delivery.proc.wait(5)
    parties.restart("delivery")
    final = client_wait(client, outcome.order_id)
    assert final.status == "completed", final.reason
    assert parties.count("delivery.sqlite", "shipments") == 1
    assert parties.balance() == BALANCE - PRICE


def test_seller_killed_after_recording_the_order_resumes_it(parties: Parties) -> None:
    client, sealed = order_to_a_dying_seller(parties, "after-receive")
    assert parties.balance() == BALANCE  # killed before anything left for the card manager
    parties.restart("seller")
    final = client.wait_for_outcome(sealed, timeout=30)
    assert final.status == "completed", final.reason
    assert parties.balance() == BALANCE - PRICE
    assert parties.count("issuer.sqlite", "authorisations") == 1


# -- what another local user sees: argv, traces ---------------------------------------------


def test_buy_and_card_backed_servers_keep_secrets_out_of_argv(parties: Parties) -> None:
    """`ps` while the purchase runs: neither the buy process, nor its card process, nor a
    party server started with its PIN (the card manager on a card) shows a secret."""
    from tests.procwatch import run_watched

    issuer = parties.start("issuer", card=parties.home / "issuer.card.json",
                           port=parties.procs["issuer"].port)
    with open(f"/proc/{issuer.pid}/cmdline", "rb") as f:
        issuer_cmdline = f.read()
    assert b"--state" in issuer_cmdline and PIN.encode() not in issuer_cmdline
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETTX_")}
    run = run_watched([sys.executable, "-m", "host.cli",
                       *buy_args(parties, "--state", str(parties.card))],
                      env={**env, "COLUMNS": "200", **SECRETS})
    assert run.returncode == 0, run.stdout + run.stderr
    assert any(b"card_applet.serve" in c for c in run.cmdlines.values()), run.cmdlines
    run.assert_secrets_hidden(PIN, CARD_NUMBER)


def hex_forms(text: str) -> list[str]:
    """How a value shows in a trace line (spaced upper-case hex) or anywhere else."""
    raw = text.encode()
    return [text, raw.hex(" ").upper(), raw.hex(), raw.hex().upper()]


def test_trace_of_a_purchase_shows_no_secret_unless_asked(parties: Parties) -> None:
    """The attack: a trace kept for debugging (a bug report, a CI log) holds the PIN and
    every part's plaintext, which the card sealed so that no one but its party reads it."""
    secrets = {"PIN": PIN, "card number": CARD_NUMBER, "expiry": EXPIRY, "name": NAME,
               "destination": DESTINATION, "an item's name": "smart card reader"}
    run = nettx("--trace", *buy_args(parties, "--state", str(parties.card)))
    assert run.returncode == 0, run.stdout + run.stderr
    for what, value in secrets.items():
        for form in hex_forms(value):
            assert form not in run.stderr, (what, form)
    # no byte of any part's plaintext, whatever its layout: every PSO (ENCIPHER of the
    # parts, DECIPHER of the receipts) and its answer show only a length
    lines = run.stderr.splitlines()
    pso = [i for i, line in enumerate(lines) if re.search(r"SEND [01]0 2A ", line)]
    assert len(pso) >= 5, run.stderr  # three parts sealed, two receipts opened
    for i in pso:
        assert re.search(r"Lc=\d+ <\d+ bytes redacted>", lines[i]), lines[i]
        assert re.search(r"RECV (<\d+ bytes redacted> )?SW=", lines[i + 1]), lines[i + 1]
    assert "66 69 65 6C 64 73" not in run.stderr  # "fields", the parts' CBOR map key

    run = nettx("--trace-secrets", *buy_args(parties, "--state", str(parties.card)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warning: --trace-secrets" in run.stderr
    for what, value in secrets.items():
        assert value.encode().hex(" ").upper() in run.stderr, what


BUY_JSON_KEYS = {"order_id", "status", "reason", "amount", "currency", "amount_text",
                 "tracking", "verified"}


def test_buy_json_is_the_outcome_alone_on_stdout(parties: Parties) -> None:
    run = nettx(*buy_args(parties, "--state", str(parties.card), "--json"))
    assert run.returncode == 0, run.stdout + run.stderr
    outcome = json.loads(run.stdout)  # nothing else on stdout: the narration is on stderr
    assert set(outcome) == BUY_JSON_KEYS
    assert outcome["status"] == "completed" and outcome["amount"] == PRICE
    assert outcome["currency"] == "EUR" and outcome["amount_text"] == "49.90 EUR"
    assert outcome["tracking"].startswith("TRK-")
    assert set(outcome["verified"]) == {"issuer", "delivery"}
    declined = nettx(*buy_args(parties, "--state", str(parties.card), "--json",
                               expiry="10/30"))
    assert declined.returncode == 3, declined.stdout + declined.stderr
    assert json.loads(declined.stdout)["status"] == "declined"
