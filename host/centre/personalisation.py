"""Personalisation of a blank card by the centre, through any reader.

INITIALIZE UPDATE gives the card's serial and challenge and proves the card holds the
transport key diversified from ours; every following command carries a C-MAC under the
session key with a counter, so no command can be replayed, within or across sessions.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Sequence

from card_applet import blom, keys
from card_applet.apdu import SHORT_MAX_LE
from card_applet.tlv import tlv
from card_applet.vocabulary import CLA_PROPRIETARY, Ins, Lifecycle, PersoObject, encode_pin
from host.centre.authority import Authority
from host.errors import PersonalisationError
from terminal.cardauth import CardPairing
from terminal.session import CardSession


class PersoChannel:
    def __init__(self, session: CardSession, transport_master: bytes) -> None:
        self.session = session
        host_challenge = secrets.token_bytes(8)
        answer = session.protocol.send_apdu(CLA_PROPRIETARY, Ins.INITIALIZE_UPDATE, 0, 0,
                                            host_challenge, SHORT_MAX_LE,
                                            name="INITIALIZE UPDATE")
        if len(answer) != 32:
            raise PersonalisationError("INITIALIZE UPDATE answer is not 32 bytes")
        self.serial, card_challenge, cryptogram = answer[:8], answer[8:16], answer[16:]
        transport_key = keys.diversify_transport_key(transport_master, self.serial)
        self._key = keys.perso_session_key(transport_key, host_challenge, card_challenge)
        expected = keys.card_cryptogram(self._key, host_challenge, card_challenge)
        if not hmac.compare_digest(expected, cryptogram):
            raise PersonalisationError(f"card {self.serial.hex()} is not one of this centre's "
                                       "(card cryptogram does not verify)")
        self._counter = 0

    def send(self, ins: int, p1: int, p2: int, payload: bytes, name: str) -> None:
        self._counter += 1
        header = bytes((CLA_PROPRIETARY, ins, p1, p2))
        mac = keys.command_mac(self._key, self._counter, header, payload)
        self.session.protocol.send_apdu(CLA_PROPRIETARY, ins, p1, p2, payload + mac, name=name)

    def store(self, tag: PersoObject, value: bytes) -> None:
        self.send(Ins.STORE_DATA, 0, 0, tlv(tag, value), f"STORE DATA {tag.name}")

    def lock(self) -> None:
        self.send(Ins.SET_STATUS, 0, Lifecycle.OPERATIONAL, b"", "SET STATUS")


KeepPairing = Callable[[CardPairing], object]


def personalise(session: CardSession, transport_master: bytes, holder_id: str,
                row: Sequence[int], pin: str, puk: str,
                keep: KeepPairing | None = None, card_key: bytes | None = None) -> CardPairing:
    """Load holder id, row, PIN, PUK and a fresh card authentication key, then lock the card
    for good. Returns the pairing (serial and key) the holder's terminal keeps; `keep` stores
    it before the lock, so a pairing that cannot be stored leaves the card unlocked (to be
    personalised again) rather than locked with a key nobody has. `card_key`: load this key
    instead of a fresh random one (tests that replay a personalisation need it twice)."""
    info = session.select()
    if info.lifecycle != Lifecycle.PERSONALISATION:
        raise PersonalisationError(f"card {info.serial.hex()} is already personalised "
                                   f"(holder {info.holder_id!r})")
    pin_value, puk_value = encode_pin(pin), encode_pin(puk)
    channel = PersoChannel(session, transport_master)
    channel.store(PersoObject.HOLDER_ID, blom.identifier_bytes(holder_id))
    channel.store(PersoObject.ROW, blom.row_to_bytes(row))
    channel.store(PersoObject.PIN, pin_value)
    channel.store(PersoObject.PUK, puk_value)
    if card_key is None:
        card_key = secrets.token_bytes(keys.CARD_AUTH_KEY_SIZE)
    channel.store(PersoObject.CARD_AUTH_KEY, card_key)
    pairing = CardPairing(holder_id, channel.serial, card_key)
    if keep is not None:
        keep(pairing)
    channel.lock()
    return pairing


def issue_onto_card(centre: Authority, session: CardSession, holder_id: str, pin: str,
                    puk: str, keep: KeepPairing | None = None) -> CardPairing:
    """The centre's whole job for one holder: refuse a taken identifier, compute the row,
    write it straight onto the blank card (it is never stored anywhere else), and register
    the identifier with the card's serial only once the card is locked. The returned
    pairing goes to the holder's terminal; the centre keeps no copy of its key."""
    (x,) = centre.check_new([holder_id])
    (row,) = centre.rows_for([x])
    pairing = personalise(session, centre.transport_master, holder_id, row, pin, puk, keep)
    centre.register([holder_id], pairing.serial)
    return pairing
