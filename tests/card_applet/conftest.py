"""Card applet fixtures: blank and personalised cards driven by raw APDUs, and a peer.

Cards are built the way the centre builds them: `manufacture` with a transport key
diversified from a known master, then the real personalisation commands (INITIALIZE UPDATE,
STORE DATA with C-MAC, SET STATUS). Rows come from the shared Blom vectors (k = 4), so every
key the card derives can be checked against the vectors' pair keys.

`CardDriver.send` talks to `Applet.process` directly and returns the data and the status
word, so a test states the exact bytes that go in and come out.

The cards: `blank` (personalisation state), `card` (Alice, personalised with her row from the
vectors, selected, PIN not verified), `ready_card` (PIN verified, seller as peer) and `peer`
(the seller's software card with Alice as its peer). The test_applet_*.py modules take them
from here and share their expectations and helpers through applet_helpers.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from card_applet import blom, keys
from card_applet.apdu import CommandApdu
from card_applet.applet import Applet
from card_applet.state import MemoryStore, PersistentState, manufacture
from card_applet.tlv import tlv
from card_applet.vocabulary import AID, TAG_KEY_REFERENCE, Ins, Lifecycle, PersoObject, encode_pin
from host.centre.personalisation import personalise
from host.parties.softcard import software_card
from terminal.inprocess import InProcessReader
from terminal.session import CardSession

# the Blom vectors travel with the repository (a copy of the design's shared/vectors file)
VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "vectors" / "blom-v1.json"

HOLDER = "holder:alice@example.org"
SELLER = "seller:shop.example"
ISSUER = "issuer:card-manager.example"
DELIVERY = "delivery:parcel.example"
PIN, PUK = "1234", "12345678"
PIN_BLOCK = encode_pin(PIN)
PUK_BLOCK = encode_pin(PUK)
TRANSPORT_MASTER = bytes(range(32))
SERIAL = bytes.fromhex("4E54580000000001")
# the key of the card authentication vectors 0-2 (docs/apdu.md 6.5)
CARD_AUTH_KEY = bytes(range(0x40, 0x60))


@cache
def vectors() -> dict:
    return json.loads(VECTORS_PATH.read_text())


def party(identifier: str) -> dict:
    (found,) = (p for p in vectors()["parties"] if p["id"] == identifier)
    return found


def row_of(identifier: str) -> list[int]:
    return [int(h, 16) for h in party(identifier)["row_hex"]]


def pair_key_of(a: str, b: str) -> bytes:
    for pair in vectors()["pairs"]:
        if {pair["a"], pair["b"]} == {a, b}:
            return bytes.fromhex(pair["pair_key_hex"])
    raise KeyError((a, b))


def h(text: str) -> bytes:
    """Hex with spaces allowed: h("00 A4 04 00")."""
    return bytes.fromhex(text)


def mse_data(peer_id: str | bytes) -> bytes:
    raw = peer_id.encode() if isinstance(peer_id, str) else peer_id
    return tlv(TAG_KEY_REFERENCE, raw)


# -- driving an applet with raw APDUs ---------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    data: bytes
    sw: int


class CardDriver:
    def __init__(self, applet: Applet, store: MemoryStore) -> None:
        self.applet = applet
        self.store = store

    @property
    def state(self) -> PersistentState:
        return self.store.state

    def send(self, raw: bytes | str) -> Reply:
        out = self.applet.process(h(raw) if isinstance(raw, str) else raw)
        assert len(out) >= 2
        reply = Reply(out[:-2], int.from_bytes(out[-2:], "big"))
        if reply.sw not in (0x9000, 0x6282) and reply.sw >> 8 != 0x61:  # 6282: a warning
            assert reply.data == b"", f"{reply.sw:04X} came with data"
        return reply

    def cmd(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
            le: int | None = None, *, extended: bool = False) -> Reply:
        return self.send(CommandApdu(cla, ins, p1, p2, data, le, extended).to_bytes())

    def ok(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
           le: int | None = None, *, extended: bool = False) -> bytes:
        """Send and require 9000; returns the data."""
        reply = self.cmd(cla, ins, p1, p2, data, le, extended=extended)
        assert reply.sw == 0x9000, f"{reply.sw:04X}"
        return reply.data

    # the card's verbs, as raw APDUs
    def select(self) -> Reply:
        return self.cmd(0x00, Ins.SELECT, 0x04, 0x00, AID, 256)

    def get_data(self, tag: int) -> Reply:
        return self.cmd(0x00, Ins.GET_DATA, tag >> 8, tag & 0xFF, le=256)

    def verify(self, pin: str | bytes = PIN) -> Reply:
        block = encode_pin(pin) if isinstance(pin, str) else pin
        return self.cmd(0x00, Ins.VERIFY, 0x00, 0x81, block)

    def set_peer(self, peer_id: str | bytes) -> Reply:
        return self.cmd(0x00, Ins.MANAGE_SECURITY_ENVIRONMENT, 0x41, 0xA4, mse_data(peer_id))

    def pso(self, p1p2: int, data: bytes, le: int | None = 256) -> Reply:
        return self.cmd(0x00, Ins.PERFORM_SECURITY_OPERATION, p1p2 >> 8, p1p2 & 0xFF, data, le,
                        extended=len(data) > 255)


class RecordingReader(InProcessReader):
    """The in-process reader, keeping every command APDU it carried."""

    def __init__(self, applet: Applet, *, extended_length: bool = True) -> None:
        super().__init__(applet)
        self.extended_length = extended_length
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return super().transmit(apdu)


def driver_for(state: PersistentState) -> CardDriver:
    store = MemoryStore(state)
    return CardDriver(Applet(store), store)


# -- the personalisation host, by hand --------------------------------------------------------


class PersoHost:
    """The centre's side of a personalisation session, building each APDU itself so tests
    can replay, corrupt or reorder them."""

    def __init__(self, card: CardDriver, transport_master: bytes = TRANSPORT_MASTER,
                 host_challenge: bytes = bytes(range(8))) -> None:
        self.card = card
        answer = card.ok(0x80, Ins.INITIALIZE_UPDATE, 0, 0, host_challenge, 256)
        assert len(answer) == 32
        self.serial, self.card_challenge, cryptogram = answer[:8], answer[8:16], answer[16:]
        transport_key = keys.diversify_transport_key(transport_master, self.serial)
        self.key = keys.perso_session_key(transport_key, host_challenge, self.card_challenge)
        assert cryptogram == keys.card_cryptogram(self.key, host_challenge, self.card_challenge)
        self.counter = 0

    def apdu(self, ins: int, p1: int, p2: int, payload: bytes) -> bytes:
        """The next MAC'd command's bytes (spends one counter value); extended length when
        the data needs it."""
        self.counter += 1
        header = bytes((0x80, ins, p1, p2))
        mac = keys.command_mac(self.key, self.counter, header, payload)
        return CommandApdu(0x80, ins, p1, p2, payload + mac).to_bytes()

    def store(self, tag: int, value: bytes) -> Reply:
        return self.card.send(self.apdu(Ins.STORE_DATA, 0, 0, tlv(tag, value)))

    def lock(self) -> Reply:
        return self.card.send(self.apdu(Ins.SET_STATUS, 0x00, Lifecycle.OPERATIONAL, b""))

    def load_all(self, holder: str = HOLDER, row: list[int] | None = None) -> None:
        row = row if row is not None else row_of(holder)
        for tag, value in ((PersoObject.HOLDER_ID, holder.encode()),
                           (PersoObject.ROW, blom.row_to_bytes(row)),
                           (PersoObject.PIN, PIN_BLOCK), (PersoObject.PUK, PUK_BLOCK),
                           (PersoObject.CARD_AUTH_KEY, CARD_AUTH_KEY)):
            assert self.store(tag, value).sw == 0x9000


def blank_state(serial: bytes = SERIAL) -> PersistentState:
    return manufacture(keys.diversify_transport_key(TRANSPORT_MASTER, serial), serial)


def personalised_state(holder: str = HOLDER) -> PersistentState:
    """A blank card personalised through the terminal stack and host.centre.personalisation."""
    store = MemoryStore(blank_state())
    session = CardSession(InProcessReader(Applet(store)))
    personalise(session, TRANSPORT_MASTER, holder, row_of(holder), PIN, PUK)
    assert store.state.lifecycle == Lifecycle.OPERATIONAL
    return store.state


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def blank() -> CardDriver:
    """A blank card (personalisation state), selected."""
    card = driver_for(blank_state())
    assert card.select().sw == 0x9000
    return card


@pytest.fixture
def card() -> CardDriver:
    """Alice's personalised card, freshly selected: PIN not verified, no peer."""
    driver = driver_for(personalised_state())
    assert driver.select().sw == 0x9000
    return driver


@pytest.fixture
def ready_card(card: CardDriver) -> CardDriver:
    """Alice's card with the PIN verified and the seller as peer."""
    assert card.verify().sw == 0x9000
    assert card.set_peer(SELLER).sw == 0x9000
    return card


@pytest.fixture
def peer() -> CardSession:
    """The seller's software card (its row from the vectors), with Alice as its peer."""
    session = software_card(SELLER, row_of(SELLER))
    session.set_peer(HOLDER)
    return session


@pytest.fixture(scope="session")
def operational_template() -> PersistentState:
    """Alice's personalised card state, shared (it is immutable) by tests that build many
    applets from it."""
    return personalised_state()


@pytest.fixture(scope="session")
def blank_template() -> PersistentState:
    return blank_state()
