"""MANAGE SECURITY ENVIRONMENT and PERFORM SECURITY OPERATION: the peer, sealed boxes both ways,
the transaction counter. Cards: conftest.py."""

from __future__ import annotations

import pytest

from card_applet import keys
from terminal.errors import IntegrityError as CardIntegrityError
from terminal.session import CardSession
from tests.card_applet.applet_helpers import (
    DECIPHER,
    ENCIPHER,
    OK,
    assert_unchanged,
    encipher,
    open_as_seller,
    pso_data,
    seal_as_seller,
    snapshot,
)
from tests.card_applet.conftest import (
    DELIVERY,
    HOLDER,
    ISSUER,
    SELLER,
    CardDriver,
    Reply,
    driver_for,
    h,
    mse_data,
    pair_key_of,
    personalised_state,
)

# == MANAGE SECURITY ENVIRONMENT ==============================================================


@pytest.mark.parametrize("p1", [0x41, 0x81, 0xC1, 0xF1])
@pytest.mark.parametrize("p2", [0xA4, 0xB8])
def test_mse_set_peer(card: CardDriver, p1: int, p2: int) -> None:
    before = snapshot(card)
    assert card.cmd(0x00, 0x22, p1, p2, mse_data(SELLER)) == Reply(b"", OK)
    assert_unchanged(card, before)


@pytest.mark.parametrize(("p1", "p2"), [(0x01, 0xA4), (0x42, 0xA4), (0xF3, 0xA4), (0x41, 0xB6),
                                        (0x41, 0xAA), (0x41, 0x00)])
def test_mse_bad_p1_p2(card: CardDriver, p1: int, p2: int) -> None:
    assert card.cmd(0x00, 0x22, p1, p2, mse_data(SELLER)).sw == 0x6A86


@pytest.mark.parametrize("data", [
    "", "83", "83 05 61 62 63", "83 81", "84 03 61 62 63", "83 01 61 83 01 62",
    "83 01 61 84 01 62", "83 00", "83 01 FF", "83 02 C3 28", "DF 11 01 61",
])
def test_mse_bad_data(card: CardDriver, data: str) -> None:
    assert card.cmd(0x00, 0x22, 0x41, 0xA4, h(data)).sw == 0x6A80


def test_mse_identifier_lengths(card: CardDriver) -> None:
    assert card.set_peer("s" * 64).sw == OK
    assert card.set_peer("s" * 65).sw == 0x6A80


def test_mse_own_identifier_refused(card: CardDriver) -> None:
    assert card.set_peer(HOLDER).sw == 0x6A80


def test_failed_mse_keeps_the_previous_peer(ready_card: CardDriver) -> None:
    assert ready_card.set_peer(HOLDER).sw == 0x6A80
    box = encipher(ready_card, b"still for the seller")
    assert open_as_seller(box) == (1, b"still for the seller")


def test_mse_before_personalisation(blank: CardDriver) -> None:
    assert blank.set_peer(SELLER).sw == 0x6985


# == PERFORM SECURITY OPERATION ===============================================================


def test_encipher_box_format_and_key(ready_card: CardDriver) -> None:
    box = encipher(ready_card, b"order part", b"header", b"order-42")
    assert len(box) == 1 + 4 + 12 + len(b"order part") + 16
    assert box[:5] == h("01 00 00 00 01")
    assert open_as_seller(box, b"header", b"order-42") == (1, b"order part")


def test_encipher_needs_the_pin(card: CardDriver) -> None:
    assert card.set_peer(SELLER).sw == OK
    before = snapshot(card)
    assert card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6982
    assert card.pso(DECIPHER, pso_data(0x86, seal_as_seller(b"x"))).sw == 0x6982
    assert_unchanged(card, before)


def test_encipher_needs_a_peer(card: CardDriver) -> None:
    assert card.verify().sw == OK
    before = snapshot(card)
    assert card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6985
    assert card.pso(DECIPHER, pso_data(0x86, seal_as_seller(b"x"))).sw == 0x6985
    assert_unchanged(card, before)


def test_pso_before_personalisation(blank: CardDriver) -> None:
    assert blank.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6985


@pytest.mark.parametrize("p1p2", [0x9E9A, 0x0000, 0x0086, 0x8681, 0x8080, 0x8686])
def test_pso_bad_p1_p2(ready_card: CardDriver, p1p2: int) -> None:
    before = snapshot(ready_card)
    assert ready_card.pso(p1p2, pso_data(0x80, b"x")).sw == 0x6A86
    assert_unchanged(ready_card, before)


def test_pso_bad_p1_p2_checked_first(card: CardDriver) -> None:
    assert card.pso(0x9E9A, pso_data(0x80, b"x")).sw == 0x6A86


@pytest.mark.parametrize(("operation", "data"), [
    (ENCIPHER, ""),
    (ENCIPHER, "81 02 AA BB"),
    (ENCIPHER, "86 02 AA BB"),
    (ENCIPHER, "80 01 AA 80 01 BB"),
    (ENCIPHER, "80 01 AA 83 00"),
    (ENCIPHER, "80 05 AA"),
    (ENCIPHER, "80 80"),
    (DECIPHER, ""),
    (DECIPHER, "80 02 AA BB"),
    (DECIPHER, "86 00 86 00"),
])
def test_pso_bad_data(ready_card: CardDriver, operation: int, data: str) -> None:
    before = snapshot(ready_card)
    assert ready_card.pso(operation, h(data)).sw == 0x6A80
    assert_unchanged(ready_card, before)


def test_pso_context_limit(ready_card: CardDriver) -> None:
    before = snapshot(ready_card)
    assert ready_card.pso(ENCIPHER, pso_data(0x80, b"x", context=bytes(65))).sw == 0x6A80
    assert_unchanged(ready_card, before)
    box = encipher(ready_card, b"x", context=bytes(64))
    assert open_as_seller(box, context=bytes(64)) == (1, b"x")


def test_encipher_empty_plaintext(ready_card: CardDriver) -> None:
    box = encipher(ready_card, b"")
    assert len(box) == 33
    assert open_as_seller(box) == (1, b"")


def test_atc_increments_by_one_per_encipher(ready_card: CardDriver) -> None:
    for expected in range(1, 6):
        box = encipher(ready_card, b"part %d" % expected)
        assert box[1:5] == expected.to_bytes(4, "big")
        assert ready_card.applet.atc == expected
        assert ready_card.get_data(0xC6).data == expected.to_bytes(4, "big")
        assert open_as_seller(box) == (expected, b"part %d" % expected)


def test_atc_untouched_by_failures_and_decipher(ready_card: CardDriver) -> None:
    encipher(ready_card, b"one")
    ready_card.pso(ENCIPHER, h("81 00"))
    ready_card.pso(DECIPHER, pso_data(0x86, seal_as_seller(b"in")))
    ready_card.pso(DECIPHER, pso_data(0x86, bytes(40)))
    assert encipher(ready_card, b"two")[1:5] == h("00 00 00 02")


def test_atc_exhausted() -> None:
    card = driver_for(personalised_state().with_(atc_reserved=0xFFFF_FFFE))
    for apdu in (card.select(), card.verify(), card.set_peer(SELLER)):
        assert apdu.sw == OK
    assert encipher(card, b"last")[1:5] == h("FF FF FF FF")
    before = snapshot(card)
    assert card.pso(ENCIPHER, pso_data(0x80, b"one more")).sw == 0x6985
    assert_unchanged(card, before)


def test_nonces_are_fresh(ready_card: CardDriver) -> None:
    first, second = encipher(ready_card, b"same"), encipher(ready_card, b"same")
    assert first[5:17] != second[5:17]
    assert first[17:] != second[17:]


def test_decipher(ready_card: CardDriver) -> None:
    box = seal_as_seller(b"authorised", b"hdr", b"ctx", atc=99)
    before = snapshot(ready_card)
    reply = ready_card.pso(DECIPHER, pso_data(0x86, box, b"hdr", b"ctx"))
    assert (reply.data, reply.sw) == (b"authorised", OK)
    assert_unchanged(ready_card, before)


@pytest.mark.parametrize("index", [1, 4, 5, 16, 17, 20, -16, -1])
def test_decipher_tampered_box(ready_card: CardDriver, index: int) -> None:
    box = bytearray(seal_as_seller(b"order 1234"))
    box[index] ^= 0x01
    assert ready_card.pso(DECIPHER, pso_data(0x86, bytes(box))).sw == 0x6988


def test_decipher_wrong_aad(ready_card: CardDriver) -> None:
    box = seal_as_seller(b"order", b"header")
    assert ready_card.pso(DECIPHER, pso_data(0x86, box, b"headeR")).sw == 0x6988
    assert ready_card.pso(DECIPHER, pso_data(0x86, box)).sw == 0x6988


def test_decipher_wrong_context(ready_card: CardDriver) -> None:
    box = seal_as_seller(b"order", context=b"order-1")
    assert ready_card.pso(DECIPHER, pso_data(0x86, box, context=b"order-2")).sw == 0x6988
    assert ready_card.pso(DECIPHER, pso_data(0x86, box)).sw == 0x6988


@pytest.mark.parametrize("size", [0, 1, 32])
def test_decipher_truncated_box(ready_card: CardDriver, size: int) -> None:
    box = seal_as_seller(b"")
    assert len(box) == 33
    assert ready_card.pso(DECIPHER, pso_data(0x86, box[:size])).sw == 0x6A80


def test_decipher_unknown_box_version(ready_card: CardDriver) -> None:
    box = b"\x02" + seal_as_seller(b"order")[1:]
    assert ready_card.pso(DECIPHER, pso_data(0x86, box)).sw == 0x6A80


def test_decipher_refuses_own_box_reflected(ready_card: CardDriver) -> None:
    """A holder -> seller box replayed to the holder as if seller -> holder: the direction is
    in the key, so it does not open."""
    box = encipher(ready_card, b"reflect me")
    assert ready_card.pso(DECIPHER, pso_data(0x86, box)).sw == 0x6988


def test_box_for_another_peer_does_not_open(ready_card: CardDriver) -> None:
    assert ready_card.set_peer(ISSUER).sw == OK
    box = encipher(ready_card, b"card number")
    with pytest.raises(keys.IntegrityError):
        open_as_seller(box)
    key = keys.seal_key(pair_key_of(HOLDER, ISSUER), HOLDER.encode(), ISSUER.encode(), b"")
    assert keys.open_sealed(key, box, b"") == (1, b"card number")


def test_seller_box_does_not_open_for_delivery_peer(ready_card: CardDriver) -> None:
    assert ready_card.set_peer(DELIVERY).sw == OK
    assert ready_card.pso(DECIPHER, pso_data(0x86, seal_as_seller(b"x"))).sw == 0x6988


def test_peer_opens_what_the_card_sealed(ready_card: CardDriver, peer: CardSession) -> None:
    box = encipher(ready_card, b"items and amount", b"envelope header", b"order-7")
    assert peer.decrypt(box, b"envelope header", b"order-7") == b"items and amount"


def test_card_opens_what_the_peer_sealed(ready_card: CardDriver, peer: CardSession) -> None:
    box = peer.encrypt(b"confirmation", b"hdr", b"order-7")
    reply = ready_card.pso(DECIPHER, pso_data(0x86, box, b"hdr", b"order-7"))
    assert (reply.data, reply.sw) == (b"confirmation", OK)


def test_peer_cannot_open_its_own_box_as_from_the_holder(peer: CardSession) -> None:
    box = peer.encrypt(b"reflect me")
    with pytest.raises(CardIntegrityError) as caught:
        peer.decrypt(box)
    assert caught.value.sw == 0x6988
