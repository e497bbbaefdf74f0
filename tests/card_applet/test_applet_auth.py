"""GET CHALLENGE, INTERNAL and EXTERNAL AUTHENTICATE: claim 7's confirmation between the card and
its peer. Cards: conftest.py."""

from __future__ import annotations

import pytest

from card_applet import keys
from terminal.errors import AuthenticationFailedError
from terminal.session import CardSession
from tests.card_applet.applet_helpers import (
    OK,
)
from tests.card_applet.conftest import (
    HOLDER,
    ISSUER,
    SELLER,
    CardDriver,
    pair_key_of,
)

# == GET CHALLENGE ============================================================================


@pytest.mark.parametrize("le", [8, 9, 16, 100, 255, 256])
def test_get_challenge(card: CardDriver, le: int) -> None:
    reply = card.cmd(0x00, 0x84, 0x00, 0x00, le=le)
    assert (len(reply.data), reply.sw) == (le, OK)


def test_get_challenge_extended_le_caps_at_256(card: CardDriver) -> None:
    reply = card.send("00 84 00 00 00 03 E8")
    assert (len(reply.data), reply.sw) == (256, OK)


def test_challenges_are_fresh(card: CardDriver) -> None:
    assert card.send("00 84 00 00 10").data != card.send("00 84 00 00 10").data


@pytest.mark.parametrize("raw", ["00 84 00 00", "00 84 00 00 01", "00 84 00 00 07",
                                 "00 84 00 00 01 00 08"])
def test_get_challenge_wrong_length(card: CardDriver, raw: str) -> None:
    assert card.send(raw).sw == 0x6700


@pytest.mark.parametrize("raw", ["00 84 01 00 08", "00 84 00 01 08"])
def test_get_challenge_bad_p1_p2(card: CardDriver, raw: str) -> None:
    assert card.send(raw).sw == 0x6A86


def test_get_challenge_on_blank_card(blank: CardDriver) -> None:
    assert len(blank.send("00 84 00 00 08").data) == 8


# == INTERNAL / EXTERNAL AUTHENTICATE =========================================================


def internal_auth(card: CardDriver, challenge: bytes) -> bytes:
    reply = card.cmd(0x00, 0x88, 0x00, 0x00, challenge, 256)
    assert reply.sw == OK, f"{reply.sw:04X}"
    return reply.data


def external_auth(card: CardDriver, response: bytes) -> int:
    reply = card.cmd(0x00, 0x82, 0x00, 0x00, response)
    assert reply.data == b""
    return reply.sw


def card_challenge(card: CardDriver, length: int = 16) -> bytes:
    return card.ok(0x00, 0x84, 0x00, 0x00, le=length)


def confirm(sender: str, receiver: str, challenge: bytes) -> bytes:
    key = keys.confirm_key(pair_key_of(sender, receiver), sender.encode(), receiver.encode())
    return keys.confirm_mac(key, challenge)


def test_internal_authenticate_exact_answer(ready_card: CardDriver) -> None:
    challenge = bytes(range(16))
    assert internal_auth(ready_card, challenge) == confirm(HOLDER, SELLER, challenge)


def test_card_proves_itself_to_the_peer(ready_card: CardDriver, peer: CardSession) -> None:
    challenge = peer.get_challenge(16)
    peer.external_authenticate(internal_auth(ready_card, challenge))


def test_peer_proves_itself_to_the_card(ready_card: CardDriver, peer: CardSession) -> None:
    challenge = card_challenge(ready_card)
    response = peer.internal_authenticate(challenge)
    assert response == confirm(SELLER, HOLDER, challenge)
    assert external_auth(ready_card, response) == OK


def test_external_authenticate_without_pin(card: CardDriver, peer: CardSession) -> None:
    assert card.set_peer(SELLER).sw == OK
    challenge = card_challenge(card, 8)
    assert external_auth(card, peer.internal_authenticate(challenge)) == OK


def test_external_authenticate_wrong_response(ready_card: CardDriver) -> None:
    challenge = card_challenge(ready_card)
    wrong = bytearray(confirm(SELLER, HOLDER, challenge))
    wrong[0] ^= 0x80
    assert external_auth(ready_card, bytes(wrong)) == 0x6300


def test_challenge_is_single_use(ready_card: CardDriver, peer: CardSession) -> None:
    response = peer.internal_authenticate(card_challenge(ready_card))
    assert external_auth(ready_card, response) == OK
    assert external_auth(ready_card, response) == 0x6985


def test_challenge_is_spent_by_a_failure(ready_card: CardDriver, peer: CardSession) -> None:
    challenge = card_challenge(ready_card)
    assert external_auth(ready_card, bytes(16)) == 0x6300
    assert external_auth(ready_card, peer.internal_authenticate(challenge)) == 0x6985


def test_card_refuses_its_own_answer_reflected(ready_card: CardDriver) -> None:
    challenge = card_challenge(ready_card)
    assert external_auth(ready_card, internal_auth(ready_card, challenge)) == 0x6300


def test_peer_refuses_its_own_answer_reflected(peer: CardSession) -> None:
    challenge = peer.get_challenge(16)
    with pytest.raises(AuthenticationFailedError) as caught:
        peer.external_authenticate(peer.internal_authenticate(challenge))
    assert caught.value.sw == 0x6300


def test_answer_for_another_peer_fails(ready_card: CardDriver, peer: CardSession) -> None:
    assert ready_card.set_peer(ISSUER).sw == OK
    challenge = peer.get_challenge(16)
    with pytest.raises(AuthenticationFailedError):
        peer.external_authenticate(internal_auth(ready_card, challenge))


def test_mse_discards_the_challenge(ready_card: CardDriver, peer: CardSession) -> None:
    challenge = card_challenge(ready_card)
    assert ready_card.set_peer(SELLER).sw == OK
    assert external_auth(ready_card, peer.internal_authenticate(challenge)) == 0x6985


def test_external_authenticate_without_challenge(ready_card: CardDriver) -> None:
    assert external_auth(ready_card, bytes(16)) == 0x6985


def test_external_authenticate_without_peer(card: CardDriver) -> None:
    card_challenge(card)
    assert external_auth(card, bytes(16)) == 0x6985


@pytest.mark.parametrize("size", [0, 8, 15, 17, 32])
def test_external_authenticate_wrong_length(ready_card: CardDriver, size: int) -> None:
    card_challenge(ready_card)
    assert external_auth(ready_card, bytes(size)) == 0x6700


def test_external_authenticate_bad_p1_p2(ready_card: CardDriver) -> None:
    assert ready_card.cmd(0x00, 0x82, 0x00, 0x01, bytes(16)).sw == 0x6A86


def test_external_authenticate_before_personalisation(blank: CardDriver) -> None:
    card_challenge(blank)
    assert external_auth(blank, bytes(16)) == 0x6985


@pytest.mark.parametrize("size", [8, 64])
def test_internal_authenticate_challenge_sizes(ready_card: CardDriver, size: int) -> None:
    challenge = bytes(range(size))
    assert internal_auth(ready_card, challenge) == confirm(HOLDER, SELLER, challenge)


@pytest.mark.parametrize("size", [0, 7, 65])
def test_internal_authenticate_wrong_length(ready_card: CardDriver, size: int) -> None:
    assert ready_card.cmd(0x00, 0x88, 0x00, 0x00, bytes(size), 256).sw == 0x6700


def test_internal_authenticate_needs_pin_then_peer(card: CardDriver) -> None:
    assert card.cmd(0x00, 0x88, 0x00, 0x00, bytes(8), 256).sw == 0x6982
    assert card.verify().sw == OK
    assert card.cmd(0x00, 0x88, 0x00, 0x00, bytes(8), 256).sw == 0x6985


def test_internal_authenticate_bad_p1_p2(ready_card: CardDriver) -> None:
    assert ready_card.cmd(0x00, 0x88, 0x01, 0x00, bytes(8), 256).sw == 0x6A86


def test_internal_authenticate_before_personalisation(blank: CardDriver) -> None:
    assert blank.cmd(0x00, 0x88, 0x00, 0x00, bytes(8), 256).sw == 0x6985
