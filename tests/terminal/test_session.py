"""The card session through every reader (in-process, embedded vpcd, PC/SC): one suite."""

from __future__ import annotations

import logging

import pytest

from card_applet.atr import ATR, ATR_DUAL
from card_applet.vocabulary import Lifecycle
from terminal.errors import (
    AuthenticationFailedError,
    AuthMethodBlockedError,
    IntegrityError,
    NotFoundError,
    SecurityStatusError,
    WrongPinError,
)
from terminal.session import CardSession
from terminal.trace import TRAFFIC
from tests.conftest import HOLDER, PIN, PUK, SELLER, Centre


def test_atr_is_the_cards(card_on_reader) -> None:
    # over T=0 the serial card offers T=0 and T=1 (and the reader picked T=0 by PPS)
    t0 = getattr(card_on_reader, "protocol", 1) == 0
    assert card_on_reader.reset() == (ATR_DUAL if t0 else ATR)


def test_select_returns_public_data(session: CardSession) -> None:
    info = session.select()
    assert info.holder_id == HOLDER
    assert info.lifecycle == Lifecycle.OPERATIONAL
    assert info.k == 8
    assert (info.pin_tries, info.pin_max) == (3, 3)
    assert info == session.info()


def test_row_is_never_readable(session: CardSession) -> None:
    session.select()
    session.verify_pin(PIN)
    with pytest.raises(NotFoundError) as err:
        session.get_data(0xDF11)
    assert err.value.sw == 0x6A88


def test_wrong_pin_counts_down_then_blocks_then_puk_unblocks(session: CardSession) -> None:
    session.select()
    for left in (2, 1, 0):
        with pytest.raises(WrongPinError) as err:
            session.verify_pin("9999")
        assert err.value.tries_left == left
        assert err.value.sw == 0x63C0 | left
    with pytest.raises(AuthMethodBlockedError):
        session.verify_pin(PIN)
    session.unblock_pin(PUK, "4321")
    assert session.pin_tries_left() == 3
    session.verify_pin("4321")
    assert session.pin_tries_left() == -1


def test_security_operation_needs_pin(session: CardSession) -> None:
    session.select()
    session.set_peer(SELLER)
    with pytest.raises(SecurityStatusError):
        session.encrypt(b"x")


@pytest.mark.parametrize("size", [0, 1, 255, 256, 1024, 4000])
def test_encrypt_for_peer_and_peer_decrypts(session: CardSession, centre: Centre,
                                            size: int) -> None:
    session.select()
    session.verify_pin(PIN)
    session.set_peer(SELLER)
    message = bytes(range(256)) * (size // 256) + bytes(size % 256)
    sealed = session.encrypt(message, aad=b"header", context=b"order-7")
    seller = centre.seller()
    seller.set_peer(HOLDER)
    assert seller.decrypt(sealed, aad=b"header", context=b"order-7") == message
    reply = seller.encrypt(message[::-1], aad=b"h2")
    assert session.decrypt(reply, aad=b"h2") == message[::-1]
    with pytest.raises(IntegrityError):
        seller.decrypt(sealed, aad=b"other header", context=b"order-7")


def test_transaction_counter_increments_per_encryption(session: CardSession) -> None:
    session.select()
    session.verify_pin(PIN)
    session.set_peer(SELLER)
    before = session.info().atc
    boxes = [session.encrypt(b"m") for _ in range(3)]
    assert [int.from_bytes(b[1:5], "big") for b in boxes] == [before + 1, before + 2, before + 3]
    assert session.info().atc == before + 3


def test_short_only_path_chains_commands_and_responses(card_on_reader, centre: Centre) -> None:
    short = CardSession(card_on_reader, extended=False)
    short.select()
    short.verify_pin(PIN)
    short.set_peer(SELLER)
    sealed = short.encrypt(b"\xa5" * 3000)
    seller = centre.seller()
    seller.set_peer(HOLDER)
    assert seller.decrypt(sealed) == b"\xa5" * 3000


def test_confirmation_both_ways(session: CardSession, centre: Centre) -> None:
    session.select()
    session.verify_pin(PIN)
    session.set_peer(SELLER)
    seller = centre.seller()
    seller.set_peer(HOLDER)
    session.prove_to(seller)
    seller.prove_to(session)
    # reflection: the card's own answer, sent back at it, is refused
    challenge = session.get_challenge()
    with pytest.raises(AuthenticationFailedError):
        session.external_authenticate(session.internal_authenticate(challenge))


def test_reset_clears_verification(card_on_reader) -> None:
    session = CardSession(card_on_reader)
    session.select()
    session.verify_pin(PIN)
    card_on_reader.reset()
    session.select()
    assert session.pin_tries_left() == 3
    session.set_peer(SELLER)
    with pytest.raises(SecurityStatusError):
        session.encrypt(b"x")


def test_trace_logs_each_apdu_and_redacts_pin(session: CardSession,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(TRAFFIC, logger="nettx.apdu"):
        session.select()
        session.verify_pin(PIN)
    lines = [r.getMessage() for r in caplog.records if r.name == "nettx.apdu"]
    assert any("SEND 00 A4 04 00" in line for line in lines)
    assert any("SW=9000 (success)" in line for line in lines)
    verify = [line for line in lines if "SEND 00 20 00 81" in line]
    assert verify and "redacted" in verify[0]
    assert PIN.encode().hex() not in " ".join(lines).replace(" ", "").lower()
    assert all(r.levelno == TRAFFIC for r in caplog.records if r.name == "nettx.apdu")
    assert logging.getLevelName(TRAFFIC) == "TRAFFIC"



def test_get_response_after_proprietary_command_uses_cla_00() -> None:
    """INITIALIZE UPDATE (CLA 80) sent without Le answers 6120; the stack must fetch the
    32 bytes with 00 C0 (GET RESPONSE is inter-industry), not 80 C0 (6D00)."""
    from card_applet.apdu import CommandApdu
    from card_applet.applet import Applet
    from card_applet.state import MemoryStore, manufacture
    from card_applet.vocabulary import AID
    from terminal.inprocess import InProcessReader
    from terminal.protocol import ApduProtocol

    protocol = ApduProtocol(InProcessReader(Applet(MemoryStore(manufacture(bytes(32))))))
    protocol.send(CommandApdu(0x00, 0xA4, 0x04, 0x0C, AID))
    resp = protocol.send(CommandApdu(0x80, 0x50, 0x00, 0x00, bytes(8)))
    assert resp.sw == 0x9000
    assert len(resp.data) == 32
