"""The holder's keyring of card authentication keys, and the host flows that need it.

Personalisation writes the pairing (0600, in a 0700 directory of the home); the flows that
send a secret refuse a session that did not authenticate its card; the expectation is the
pairing file the user names, the holder the user names, or the only holder the home pairs.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from card_applet import blom
from card_applet.applet import Applet
from card_applet.state import FileStore, MemoryStore
from card_applet.vocabulary import Ins, Lifecycle
from host.centre.authority import Authority
from host.centre.pairing import (
    CardExpectation,
    Keyring,
    PairingFileError,
    authenticated_session,
    read_pairing,
)
from host.centre.personalisation import issue_onto_card, personalise
from host.parties.holder import HolderClient
from host.parties.keymodule import KeyModule
from terminal.cardauth import CardPairing
from terminal.errors import CardAuthenticationError, CardIdentityError, CardNotPairedError
from terminal.inprocess import InProcessReader
from terminal.session import CardSession

ALICE, BOB = "holder:alice@example.org", "holder:bob@example.org"
SELLER = "seller:shop.example"
PIN, PUK = "1234", "12345678"


class Recording(InProcessReader):
    def __init__(self, applet: Applet) -> None:
        super().__init__(applet)
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return super().transmit(apdu)


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    authority = Authority(tmp_path_factory.mktemp("centre"))
    authority.init(k=4)
    return authority


def new_card(centre: Authority, path: Path, holder: str) -> CardPairing:
    centre.manufacture_card(path)
    return issue_onto_card(centre, CardSession(InProcessReader(Applet(FileStore(path)))),
                           holder, PIN, PUK)


@pytest.fixture(scope="module")
def cards(centre: Authority, tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, tuple[Path, CardPairing]]:
    tmp = tmp_path_factory.mktemp("cards")
    return {holder: (tmp / f"{holder[7:10]}.json",
                     new_card(centre, tmp / f"{holder[7:10]}.json", holder))
            for holder in (ALICE, BOB)}


def reader_for(path: Path) -> Recording:
    return Recording(Applet(MemoryStore(FileStore(path).load())))


def test_the_keyring_writes_0600_in_a_0700_directory(tmp_path: Path, cards: dict) -> None:
    _, pairing = cards[ALICE]
    path = Keyring(tmp_path).save(pairing)
    assert path == tmp_path / "cards" / f"{pairing.serial.hex()}.pairing.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_pairing(path) == pairing
    doc = json.loads(path.read_text())
    assert doc == {"format": 1, "holder": ALICE, "serial": pairing.serial.hex(),
                   "card_auth_key": pairing.key.hex()}


def test_the_key_matches_the_card_and_the_centre_keeps_none(centre: Authority,
                                                             cards: dict) -> None:
    path, pairing = cards[ALICE]
    assert FileStore(path).load().card_auth_key == pairing.key
    for file in centre.dir.iterdir():
        assert pairing.key.hex() not in file.read_bytes().hex()
        assert pairing.key.hex() not in file.read_text(errors="replace")


def test_a_pairing_that_cannot_be_kept_leaves_the_card_unlocked(centre: Authority,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    centre.manufacture_card(path)

    def full_disk(_pairing: CardPairing) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        personalise(CardSession(InProcessReader(Applet(FileStore(path)))),
                    centre.transport_master, "holder:carol@example.org",
                    centre.rows_for([blom.x_of("holder:carol@example.org")])[0], PIN, PUK,
                    keep=full_disk)
    assert FileStore(path).load().lifecycle == Lifecycle.PERSONALISATION


def test_a_paired_card_opens(tmp_path: Path, cards: dict) -> None:
    path, pairing = cards[ALICE]
    Keyring(tmp_path).save(pairing)
    reader = reader_for(path)
    session = authenticated_session(reader, CardExpectation(tmp_path))
    assert session.require_authenticated().holder_id == ALICE
    assert [apdu[1] for apdu in reader.sent] == [Ins.SELECT, Ins.SELECT,
                                                 Ins.INTERNAL_AUTHENTICATE]


def test_an_unpaired_card_gets_nothing(tmp_path: Path, cards: dict) -> None:
    reader = reader_for(cards[ALICE][0])
    with pytest.raises(CardNotPairedError, match="--pairing"):
        authenticated_session(reader, CardExpectation(tmp_path))
    assert {apdu[1] for apdu in reader.sent} == {Ins.SELECT}


def test_an_explicit_pairing_file_needs_no_keyring(tmp_path: Path, cards: dict) -> None:
    path, pairing = cards[BOB]
    file = Keyring(tmp_path / "elsewhere").save(pairing)
    session = authenticated_session(reader_for(path),
                                    CardExpectation(tmp_path / "empty-home", file))
    assert session.require_authenticated().holder_id == BOB


def test_the_named_pairing_refuses_another_holders_genuine_card(tmp_path: Path,
                                                                 cards: dict) -> None:
    """(b) Bob's genuine card in the reader, Alice's pairing named: refused on the FCI."""
    alice_file = Keyring(tmp_path).save(cards[ALICE][1])
    reader = reader_for(cards[BOB][0])
    with pytest.raises(CardIdentityError, match="not the expected"):
        authenticated_session(reader, CardExpectation(tmp_path, alice_file))
    assert {apdu[1] for apdu in reader.sent} == {Ins.SELECT}


def test_a_home_pairing_several_holders_needs_a_name(tmp_path: Path, cards: dict) -> None:
    keyring = Keyring(tmp_path)
    for _, pairing in cards.values():
        keyring.save(pairing)
    with pytest.raises(CardIdentityError, match="--holder-id"):
        authenticated_session(reader_for(cards[BOB][0]), CardExpectation(tmp_path))
    with pytest.raises(CardIdentityError, match="paired to"):
        authenticated_session(reader_for(cards[BOB][0]), CardExpectation(tmp_path,
                                                                         holder_id=ALICE))
    session = authenticated_session(reader_for(cards[ALICE][0]),
                                    CardExpectation(tmp_path, holder_id=ALICE))
    assert session.require_authenticated().holder_id == ALICE


@pytest.mark.parametrize("content", ["{", "[]", '{"format": 1}', '{"format": 2}',
                                     '{"format": 1, "holder": "holder:a", "serial": "zz", '
                                     '"card_auth_key": "00"}'])
def test_a_broken_pairing_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.pairing.json"
    bad.write_text(content)
    with pytest.raises(PairingFileError, match="not a card pairing file"):
        read_pairing(bad)


def test_a_card_naming_an_absurd_serial_is_refused(tmp_path: Path, cards: dict) -> None:
    path, _ = cards[ALICE]
    state = FileStore(path).load().with_(serial=bytes(200))
    reader = Recording(Applet(MemoryStore(state)))
    with pytest.raises(CardIdentityError, match="200-byte serial"):
        authenticated_session(reader, CardExpectation(tmp_path))
    assert {apdu[1] for apdu in reader.sent} <= {Ins.SELECT, Ins.GET_RESPONSE}


def test_pairings_check_their_own_values() -> None:
    with pytest.raises(ValueError):
        CardPairing(ALICE, bytes(8), bytes(31))
    with pytest.raises(blom.IdentifierError):
        CardPairing("", bytes(8), bytes(32))


# -- the host flows refuse an unauthenticated card --------------------------------------------


def test_the_holder_client_sends_no_pin_to_an_unauthenticated_card(cards: dict) -> None:
    reader = reader_for(cards[ALICE][0])
    with pytest.raises(CardAuthenticationError, match="not authenticated"):
            HolderClient(CardSession(reader), PIN, "127.0.0.1", 1, seller=SELLER,
                         max_amount="1.00")
    assert reader.sent == []


def test_a_key_module_sends_no_pin_to_an_unauthenticated_card(cards: dict) -> None:
    reader = reader_for(cards[ALICE][0])
    with pytest.raises(CardAuthenticationError):
        KeyModule.on_card(CardSession(reader), PIN)
    assert reader.sent == []


def test_a_key_module_on_an_authenticated_card_works(tmp_path: Path, cards: dict) -> None:
    path, pairing = cards[ALICE]
    expectation = CardExpectation(tmp_path, Keyring(tmp_path).save(pairing))
    module = KeyModule.on_card(authenticated_session(reader_for(path), expectation), PIN)
    assert module.identifier == ALICE
    sealed = asyncio.run(module.seal(BOB, b"for bob", b"aad", b"ctx"))  # PIN verified
    assert len(sealed) > len(b"for bob")
