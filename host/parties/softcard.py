"""A party's row in the same applet, in-process: the software security module.

Servers (and the demo's seller) hold their row this way, so one code path does every key
operation, whether the row sits on a card behind a reader or here.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from card_applet import blom, keys
from card_applet import pin as pin_block
from card_applet.applet import Applet
from card_applet.state import MemoryStore, PersistentState
from card_applet.vocabulary import Lifecycle, encode_pin
from terminal.cardauth import CardPairing
from terminal.inprocess import InProcessReader
from terminal.session import CardSession


def software_card(identifier: str, row: Sequence[int], pin: str = "0000") -> CardSession:
    """An operational applet holding `row`, authenticated and PIN-verified, ready to use.
    Its card authentication key exists only here: the applet is built in this process, so
    the terminal knows the card it made."""
    salt, serial = secrets.token_bytes(16), secrets.token_bytes(8)
    card_key = secrets.token_bytes(keys.CARD_AUTH_KEY_SIZE)
    state = PersistentState(
        serial=serial, transport_key=secrets.token_bytes(32), pin_salt=salt,
        lifecycle=Lifecycle.OPERATIONAL, holder_id=blom.identifier_bytes(identifier),
        row=blom.row_to_bytes(row), pin_hash=pin_block.pin_hash(salt, encode_pin(pin)),
        puk_hash=pin_block.pin_hash(salt, secrets.token_bytes(8)), card_auth_key=card_key,
    )
    session = CardSession(InProcessReader(Applet(MemoryStore(state)), name=f"ssm {identifier}"))
    session.authenticate_card(CardPairing(identifier, serial, card_key))
    session.verify_pin(pin)
    return session
