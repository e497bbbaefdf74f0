"""Attack: a fake card in the holder's reader learns no secret (card authentication).

Whoever becomes "the card" (a process that reaches the embedded reader first, a remote vpcd
slot, a card the holder did not expect) is put here behind the embedded reader that
`--reader embedded:PORT` opens, and every APDU it receives is recorded. `nettx buy`,
`card change-pin`, `card unblock` and `card encrypt` run as real processes against it, with
a live market for `buy`: none of them may send VERIFY, CHANGE REFERENCE DATA, RESET RETRY
COUNTER or PSO, nor the PIN, PUK, card number, expiry, name or destination in any form; each
fails with one error line. The fakes:

- the yes-card: answers SELECT with the holder's genuine FCI (serial and holder id are
  public) and 9000 to everything else, guessing at INTERNAL AUTHENTICATE;
- an applet personalised by the same centre for another holder, rewritten to claim the
  holder's serial and id, with a key of its own, or with none;
- another holder's genuine card, as it is;
- a card whose FCI names another holder under the holder's serial.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from card_applet.applet import Applet
from card_applet.state import FileStore, MemoryStore, PersistentState
from card_applet.vocabulary import Ins, encode_pin
from card_applet.vpcd import CardSide, VpcdCard
from host.centre.authority import Authority
from host.cli import main as cli
from terminal.ports import free_vpcd_port
from tests.host.market import CARD_NUMBER, EXPIRY, HOLDER, ISSUER, SELLER, Market
from tests.host.market import issue_market_rows as issue_rows

REPO = Path(__file__).resolve().parents[2]
MALLORY = "holder:mallory@example.org"
PIN, PUK, NEW_PIN = "1234", "12345678", "8642"
NAME, DESTINATION = "Alice Martin", "Alice's office, 5 avenue Foch, Lyon"
PLAINTEXT = "the holder's secret plaintext"
OK = b"\x90\x00"
SECRET_INS = {Ins.VERIFY, Ins.CHANGE_REFERENCE_DATA, Ins.RESET_RETRY_COUNTER,
              Ins.PERFORM_SECURITY_OPERATION}
SECRETS = [encode_pin(PIN), encode_pin(PUK), encode_pin(NEW_PIN),
           CARD_NUMBER.encode(), EXPIRY.encode(), NAME.encode(), DESTINATION.encode(),
           PLAINTEXT.encode(), b"1234", b"8642"]


def nettx(*args: str | Path, env: dict[str, str] | None = None) -> None:
    result = CliRunner().invoke(cli.main, [str(a) for a in args], env=env)
    assert result.exit_code == 0, (result.output, result.exception)


@dataclass
class World:
    home: Path
    alice: PersistentState  # the holder's genuine card (its state: the fakes copy its FCI)
    mallory: PersistentState  # another holder's genuine card, from the same centre
    market: Market


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One centre whose home is the holder's (the newcomer's flow); the holder's card is
    personalised with `nettx authority personalise`, as a user does."""
    tmp = tmp_path_factory.mktemp("fake-card")
    home = tmp / "home"
    nettx("authority", "init", "--home", home, "--k", "8")
    cards = {}
    for holder, name in ((HOLDER, "alice"), (MALLORY, "mallory")):
        path = tmp / f"{name}.card.json"
        nettx("card", "new", "--home", home, "--state", path)
        nettx("authority", "personalise", "--home", home, "--state", path, "--holder", holder,
              env={"NETTX_PIN": PIN if holder == HOLDER else "9999", "NETTX_PUK": PUK})
        cards[holder] = FileStore(path).load()
    # Mallory's pairing is his, not in the holder's home
    for pairing in (home / "cards").glob(f"{cards[MALLORY].serial.hex()}*"):
        pairing.unlink()
    authority = Authority(home)
    market = Market(authority, issue_rows(authority), tmp / "market")
    market.home.mkdir()
    market.start()
    try:
        yield World(home, cards[HOLDER], cards[MALLORY], market)
    finally:
        market.stop()


# -- the fakes --------------------------------------------------------------------------------


class Recorder:
    """Any card, every command APDU it receives kept."""

    def __init__(self, card: Applet) -> None:
        self.card = card
        self.received: list[bytes] = []

    def process(self, command: bytes) -> bytes:
        self.received.append(command)
        return self.card.process(command)

    def power_on(self) -> None:
        self.card.power_on()

    def power_off(self) -> None:
        self.card.power_off()

    def reset(self) -> None:
        self.card.reset()


class YesCard(Recorder):
    """The attacker's card process: the genuine card's public answers to SELECT and GET DATA,
    9000 to everything else (a random 'cryptogram' where the terminal wants data)."""

    def process(self, command: bytes) -> bytes:
        self.received.append(command)
        ins = command[1] if len(command) > 1 else -1
        if ins in (Ins.SELECT, Ins.GET_DATA, Ins.GET_RESPONSE):
            return self.card.process(command)
        if ins in (Ins.INTERNAL_AUTHENTICATE, Ins.GET_CHALLENGE):
            return secrets.token_bytes(32) + OK  # a guess
        if ins == Ins.PERFORM_SECURITY_OPERATION:
            return secrets.token_bytes(80) + OK
        return OK


def applet(state: PersistentState) -> Applet:
    return Applet(MemoryStore(state))


Fake = Callable[[World], Recorder]
IMPERSONATORS: dict[str, Fake] = {
    "yes-card": lambda w: YesCard(applet(w.alice.with_(card_auth_key=None))),
    "other-row-claiming-holder-own-key": lambda w: Recorder(applet(w.mallory.with_(
        serial=w.alice.serial, holder_id=w.alice.holder_id,
        card_auth_key=secrets.token_bytes(32)))),
    "other-row-claiming-holder-no-key": lambda w: Recorder(applet(w.mallory.with_(
        serial=w.alice.serial, holder_id=w.alice.holder_id, card_auth_key=None))),
    "another-holders-genuine-card": lambda w: Recorder(applet(w.mallory)),
}
OTHER_HOLDER: dict[str, Fake] = {
    "fci-names-another-holder": lambda w: Recorder(applet(w.mallory.with_(
        serial=w.alice.serial))),
    "yes-card-naming-another-holder": lambda w: YesCard(applet(w.alice.with_(
        holder_id=MALLORY.encode()))),
}


@contextlib.contextmanager
def card_behind_embedded_reader(card: Recorder) -> Iterator[int]:
    """The fake connects to whatever embedded reader listens on the port it yields, as the
    racing process of the attack does; it stops by itself when the test ends."""
    port = free_vpcd_port()
    vpcd = VpcdCard(CardSide(card), "127.0.0.1", port, backoff_max=0.2)
    thread = threading.Thread(target=vpcd.run, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        vpcd.stop.set()
        thread.join(timeout=10)


def command(name: str, world: World, port: int) -> list[str]:
    reader = ["--reader", f"embedded:127.0.0.1:{port}"]
    if name == "buy":
        return ["buy", *reader, "--seller", f"127.0.0.1:{world.market.ports['seller']}",
                "--item", "A-100", "--expiry", EXPIRY,
                "--name", NAME, "--deliver-to", DESTINATION,
                "--seller-id", SELLER, "--issuer-id", ISSUER, "--max-amount", "1000.00",
                "--wait", "0"]
    if name == "change-pin":
        return ["card", "change-pin", *reader]
    if name == "unblock":
        return ["card", "unblock", *reader]
    return ["card", "encrypt", *reader, "--peer", SELLER, "--text", PLAINTEXT]


# every secret a command may ask for, never in argv (NETTX_* is read by name)
SECRET_ENV = {"NETTX_PIN": PIN, "NETTX_NEW_PIN": NEW_PIN, "NETTX_PUK": PUK,
              "NETTX_CARD_NUMBER": CARD_NUMBER}


COMMANDS = ["buy", "change-pin", "unblock", "encrypt"]


def run_against(fake: Recorder, name: str, world: World) -> subprocess.CompletedProcess[str]:
    with card_behind_embedded_reader(fake) as port:
        return subprocess.run([sys.executable, "-m", "host.cli", *command(name, world, port)],
                              cwd=REPO, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "NETTX_HOME": str(world.home), **SECRET_ENV})


def assert_nothing_secret(fake: Recorder) -> None:
    assert fake.received, "the fake card was never reached: the test proves nothing"
    sent = [(apdu[1] if len(apdu) > 1 else None) for apdu in fake.received]
    assert not SECRET_INS & set(sent), [Ins(i).name for i in sent if i in SECRET_INS]
    everything = b"".join(fake.received)
    for secret in SECRETS:
        assert secret not in everything, f"{secret!r} reached the fake card"


def assert_refused(run: subprocess.CompletedProcess[str], why: str) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert why in lines[0] and "nothing secret was sent" in lines[0], lines[0]
    assert "confirmed" not in run.stdout


# -- the attacks ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("fake", list(IMPERSONATORS))
def test_an_impersonating_card_gets_no_secret(world: World, fake: str, name: str) -> None:
    card = IMPERSONATORS[fake](world)
    run = run_against(card, name, world)
    assert_nothing_secret(card)
    why = ("no card authentication key" if fake == "another-holders-genuine-card"
           else "card authentication")
    assert_refused(run, why)


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("fake", list(OTHER_HOLDER))
def test_a_card_naming_another_holder_is_refused_before_any_secret(world: World, fake: str,
                                                                   name: str) -> None:
    card = OTHER_HOLDER[fake](world)
    run = run_against(card, name, world)
    assert_nothing_secret(card)
    assert_refused(run, "not the expected")
    # refused on the FCI alone: not even a challenge was sent
    assert {apdu[1] for apdu in card.received} <= {Ins.SELECT, Ins.GET_RESPONSE}


def test_the_genuine_card_on_the_same_reader_gets_its_pin(world: World) -> None:
    """The control: the same command line, the holder's own card behind the reader, found
    through the pairing `nettx authority personalise` wrote (0600) into the home."""
    pairing = world.home / "cards" / f"{world.alice.serial.hex()}.pairing.json"
    assert stat.S_IMODE(pairing.stat().st_mode) == 0o600
    card = Recorder(applet(world.alice))
    run = run_against(card, "encrypt", world)
    assert run.returncode == 0, run.stderr
    assert Ins.VERIFY in {apdu[1] for apdu in card.received}
