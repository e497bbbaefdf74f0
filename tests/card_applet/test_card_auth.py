"""Card authentication: INTERNAL AUTHENTICATE with key reference 81 (docs/apdu.md).

The card proves it holds the card authentication key written at personalisation, without a
PIN; the answer is the vectors' (docs/vectors/card-auth-v1.json), bound to serial, holder id
and challenge; every malformed or premature command gets its ISO status word and changes
nothing. The session side (`CardSession.authenticate_card`) checks identity and answer
before anything secret is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from card_applet import keys
from card_applet.applet import Applet
from card_applet.state import MemoryStore
from card_applet.vocabulary import Ins, KeyReference, Lifecycle, PersoObject
from terminal.cardauth import CardPairing
from terminal.errors import CardAuthenticationError, CardIdentityError, CardRemovedError
from terminal.session import CardSession
from tests.card_applet.card_auth_vectors import PATH, build
from tests.card_applet.conftest import (
    CARD_AUTH_KEY,
    HOLDER,
    PIN,
    PUK,
    SERIAL,
    CardDriver,
    PersoHost,
    RecordingReader,
    blank_state,
    driver_for,
    personalised_state,
)

OK = 0x9000
CARD_AUTH = int(KeyReference.CARD_AUTH)


def vectors() -> list[dict]:
    return json.loads(PATH.read_text())["vectors"]


@pytest.fixture
def vector_card() -> CardDriver:
    """Alice's card personalised by hand with the vectors' key (PersoHost.load_all)."""
    card = driver_for(blank_state())
    assert card.select().sw == OK
    host = PersoHost(card)
    host.load_all()
    assert host.lock().sw == OK
    assert card.select().sw == OK
    return card


def authenticate(card: CardDriver, challenge: bytes, p2: int = CARD_AUTH,
                 p1: int = 0x00) -> tuple[bytes, int]:
    reply = card.cmd(0x00, Ins.INTERNAL_AUTHENTICATE, p1, p2, challenge, 256)
    return reply.data, reply.sw


# -- vectors ----------------------------------------------------------------------------------


def test_vector_file_is_reproduced_from_its_inputs() -> None:
    assert json.loads(PATH.read_text()) == build()


def test_mac_input_layout_byte_by_byte() -> None:
    """docs/apdu.md spells the input out: label, direction, serial, holder id, challenge,
    each with a one-byte length."""
    v = vectors()[0]
    expected = (b"\x16EP0791901/card-auth/v1" + b"\x04card" + b"\x08terminal"
                + b"\x08" + bytes.fromhex(v["serial_hex"])
                + b"\x18" + v["holder_id"].encode()
                + b"\x20" + bytes.fromhex(v["challenge_hex"]))
    assert expected.hex() == v["mac_input_hex"]


def test_every_vector_by_hand_from_apdu_md() -> None:
    """apdu.md 5.7 with hmac alone: six length-prefixed fields, HMAC-SHA256, all 32 bytes."""
    doc = json.loads(PATH.read_text())
    assert doc["format"] == 1 and len(doc["vectors"]) == 4
    for v in doc["vectors"]:
        fields = [b"EP0791901/card-auth/v1", b"card", b"terminal",
                  bytes.fromhex(v["serial_hex"]), v["holder_id"].encode(),
                  bytes.fromhex(v["challenge_hex"])]
        data = b"".join(bytes((len(f),)) + f for f in fields)
        assert data.hex() == v["mac_input_hex"]
        answer = hmac.new(bytes.fromhex(v["card_auth_key_hex"]), data, hashlib.sha256)
        assert answer.hexdigest() == v["answer_hex"]


def test_the_card_answers_the_vector(vector_card: CardDriver) -> None:
    v = vectors()[0]
    assert (bytes.fromhex(v["card_auth_key_hex"]), SERIAL, HOLDER) == (
        CARD_AUTH_KEY, bytes.fromhex(v["serial_hex"]), v["holder_id"])
    answer, sw = authenticate(vector_card, bytes.fromhex(v["challenge_hex"]))
    assert (answer.hex(), sw) == (v["answer_hex"], OK)


def test_answers_differ_by_challenge_serial_and_holder() -> None:
    answers = {v["answer_hex"] for v in vectors()}
    assert len(answers) == len(vectors())


# -- the command ------------------------------------------------------------------------------


def test_no_pin_needed_and_the_pin_state_is_untouched(vector_card: CardDriver) -> None:
    before = vector_card.state, vector_card.store.writes
    _, sw = authenticate(vector_card, bytes(32))
    assert sw == OK
    assert (vector_card.state, vector_card.store.writes) == before  # no write at all
    # still no security operation without the PIN
    assert vector_card.cmd(0x00, Ins.PERFORM_SECURITY_OPERATION, 0x86, 0x80,
                           bytes.fromhex("800161"), 256).sw == 0x6982


@pytest.mark.parametrize("p2", [0x01, 0x80, 0x82, 0x83, 0x9F, 0xFF])
def test_unknown_key_reference_is_6a88(vector_card: CardDriver, p2: int) -> None:
    assert authenticate(vector_card, bytes(32), p2=p2) == (b"", 0x6A88)


def test_p1_other_than_00_is_6a86(vector_card: CardDriver) -> None:
    assert authenticate(vector_card, bytes(32), p1=0x01) == (b"", 0x6A86)


@pytest.mark.parametrize("size", [0, 1, 8, 15, 65, 200])
def test_challenge_length_outside_16_to_64_is_6700(vector_card: CardDriver, size: int) -> None:
    assert authenticate(vector_card, bytes(size)) == (b"", 0x6700)


@pytest.mark.parametrize("size", [16, 64])
def test_challenge_length_bounds_accepted(vector_card: CardDriver, size: int) -> None:
    answer, sw = authenticate(vector_card, bytes(size))
    assert (len(answer), sw) == (keys.CARD_AUTH_SIZE, OK)


def test_before_personalisation_is_6985() -> None:
    card = driver_for(blank_state())
    assert card.select().sw == OK
    host = PersoHost(card)
    host.load_all()  # the key is loaded, but the card is not locked yet
    assert authenticate(card, bytes(32)) == (b"", 0x6985)


def test_a_card_without_the_key_is_6a88() -> None:
    """A card personalised before the key existed: the key it references is absent."""
    card = driver_for(personalised_state().with_(card_auth_key=None))
    assert card.select().sw == OK
    assert authenticate(card, bytes(32)) == (b"", 0x6A88)


def test_unselected_is_6985() -> None:
    card = driver_for(personalised_state())
    assert authenticate(card, bytes(32)) == (b"", 0x6985)


def test_the_peer_confirmation_keeps_its_own_reference(vector_card: CardDriver) -> None:
    """P2 = 00 stays claim 7's pair-key answer: PIN and peer needed, as before."""
    assert authenticate(vector_card, bytes(8), p2=0x00) == (b"", 0x6982)


# -- loading the key --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_store_data_key_of_wrong_size_is_6a80(size: int) -> None:
    card = driver_for(blank_state())
    assert card.select().sw == OK
    host = PersoHost(card)
    before = card.state, card.store.writes
    assert host.store(PersoObject.CARD_AUTH_KEY, bytes(size)).sw == 0x6A80
    assert (card.state, card.store.writes) == before


def test_the_key_cannot_be_read(vector_card: CardDriver) -> None:
    """No command returns the key: not GET DATA, not the FCI, not any template."""
    assert vector_card.get_data(0xDF14).sw == 0x6A88
    seen = vector_card.select().data + vector_card.get_data(0xC0).data
    for tag in range(0xC0, 0xC8):
        seen += vector_card.get_data(tag).data
    assert CARD_AUTH_KEY not in seen


def test_the_key_is_persistent_state() -> None:
    """It survives the state file round trip (it is EEPROM, not RAM)."""
    state = personalised_state()
    assert state.card_auth_key is not None and len(state.card_auth_key) == 32
    assert type(state).from_json(state.to_json()) == state


# -- the session ------------------------------------------------------------------------------


def recording_session(card_key: bytes | None = CARD_AUTH_KEY,
                      holder: str = HOLDER) -> tuple[CardSession, RecordingReader]:
    state = personalised_state().with_(card_auth_key=card_key, holder_id=holder.encode())
    reader = RecordingReader(Applet(MemoryStore(state)))
    return CardSession(reader), reader


def test_authenticate_card_passes_for_the_paired_card() -> None:
    session, reader = recording_session()
    info = session.authenticate_card(CardPairing(HOLDER, SERIAL, CARD_AUTH_KEY))
    assert (info.holder_id, info.serial, info.lifecycle) == (HOLDER, SERIAL,
                                                             Lifecycle.OPERATIONAL)
    assert session.require_authenticated() == info
    assert [apdu[1] for apdu in reader.sent] == [Ins.SELECT, Ins.INTERNAL_AUTHENTICATE]


@pytest.mark.parametrize("card_key", [bytes(32), None], ids=["other key", "no key"])
def test_authenticate_card_refuses_a_card_without_the_key(card_key: bytes | None) -> None:
    session, _ = recording_session(card_key)
    with pytest.raises(CardAuthenticationError, match="nothing secret was sent"):
        session.authenticate_card(CardPairing(HOLDER, SERIAL, CARD_AUTH_KEY))
    assert session.authenticated is None
    with pytest.raises(CardAuthenticationError):
        session.require_authenticated()


def test_authenticate_card_refuses_another_holder_before_challenging() -> None:
    session, reader = recording_session(holder="holder:bob@example.org")
    with pytest.raises(CardIdentityError, match="not the expected"):
        session.authenticate_card(CardPairing(HOLDER, SERIAL, CARD_AUTH_KEY))
    assert [apdu[1] for apdu in reader.sent] == [Ins.SELECT]


def test_authenticate_card_refuses_another_serial() -> None:
    session, _ = recording_session()
    with pytest.raises(CardIdentityError):
        session.authenticate_card(CardPairing(HOLDER, bytes(8), CARD_AUTH_KEY))


def test_challenges_are_fresh() -> None:
    """Two authentications never send the same challenge: a recorded answer is useless."""
    session, reader = recording_session()
    pairing = CardPairing(HOLDER, SERIAL, CARD_AUTH_KEY)
    session.authenticate_card(pairing)
    session.authenticate_card(pairing)
    challenges = [apdu[5:37] for apdu in reader.sent if apdu[1] == Ins.INTERNAL_AUTHENTICATE]
    assert len(challenges) == 2 and challenges[0] != challenges[1]
    assert all(apdu[3] == CARD_AUTH for apdu in reader.sent
               if apdu[1] == Ins.INTERNAL_AUTHENTICATE)


class SwappingReader(RecordingReader):
    """A slot whose card can be taken out and another put in, as an embedded reader that
    accepts the next connection or a PC/SC slot does: the first command after the swap
    fails (the card left), and every later one reaches the newcomer."""

    def __init__(self, applet: Applet) -> None:
        super().__init__(applet)
        self.newcomer: Applet | None = None
        self.newcomer_got: list[bytes] = []
        self._left = False

    def swap(self, newcomer: Applet) -> None:
        self.newcomer, self._left = newcomer, True

    def transmit(self, apdu: bytes) -> bytes:
        if self._left:
            self._left = False
            raise CardRemovedError("card left the slot")
        if self.newcomer is not None:
            self.newcomer_got.append(apdu)
            return self.newcomer.process(apdu)
        return super().transmit(apdu)


def test_a_card_swapped_in_after_authentication_gets_no_secret() -> None:
    """The holder's card is authenticated, then leaves; a card copying its FCI takes the
    slot. The session must not send the PIN, PUK or a plaintext to the newcomer."""
    genuine = personalised_state().with_(card_auth_key=CARD_AUTH_KEY)
    reader = SwappingReader(Applet(MemoryStore(genuine)))
    session = CardSession(reader)
    pairing = CardPairing(HOLDER, SERIAL, CARD_AUTH_KEY)
    session.authenticate_card(pairing)

    impostor = personalised_state().with_(card_auth_key=bytes(32))  # same FCI, other key
    reader.swap(Applet(MemoryStore(impostor)))
    with pytest.raises(CardRemovedError):
        session.select()  # the reader notices the card left
    for send_a_secret in (lambda: session.verify_pin(PIN),
                          lambda: session.change_pin(PIN, "8642"),
                          lambda: session.unblock_pin(PUK, PIN),
                          lambda: session.encrypt(b"card number", b"h", b"c"),
                          session.require_authenticated):
        with pytest.raises(CardAuthenticationError, match="left the reader"):
            send_a_secret()
    assert reader.newcomer_got == []
    assert session.authenticated is None

    # authenticating again is the way back, and the impostor fails it
    with pytest.raises(CardAuthenticationError, match="does not hold its key"):
        session.authenticate_card(pairing)
    assert {apdu[1] for apdu in reader.newcomer_got} == {Ins.SELECT, Ins.INTERNAL_AUTHENTICATE}


def test_the_genuine_card_back_in_the_slot_authenticates_again() -> None:
    genuine = Applet(MemoryStore(personalised_state().with_(card_auth_key=CARD_AUTH_KEY)))
    reader = SwappingReader(genuine)
    session = CardSession(reader)
    pairing = CardPairing(HOLDER, SERIAL, CARD_AUTH_KEY)
    session.authenticate_card(pairing)
    reader.swap(genuine)
    with pytest.raises(CardRemovedError):
        session.select()
    session.authenticate_card(pairing)
    session.verify_pin(PIN)  # accepted: the proof is fresh
