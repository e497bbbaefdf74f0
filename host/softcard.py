"""A party's row in the same applet, in-process: the software security module.

Servers (and the demo's seller) hold their row this way, so one code path does every key
operation, whether the row sits on a card behind a reader or here.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from card_applet import blom
from card_applet import pin as pin_block
from card_applet.applet import Applet
from card_applet.state import Lifecycle, MemoryStore, PersistentState
from terminal.inprocess import InProcessReader
from terminal.session import CardSession


def software_card(identifier: str, row: Sequence[int], pin: str = "0000") -> CardSession:
    """An operational applet holding `row`, selected and PIN-verified, ready to use."""
    salt = secrets.token_bytes(16)
    state = PersistentState(
        serial=secrets.token_bytes(8), transport_key=secrets.token_bytes(32), pin_salt=salt,
        lifecycle=Lifecycle.OPERATIONAL, holder_id=blom.identifier_bytes(identifier),
        row=blom.row_to_bytes(row), pin_hash=pin_block.pin_hash(salt, pin_block.encode_pin(pin)),
        puk_hash=pin_block.pin_hash(salt, secrets.token_bytes(8)),
    )
    session = CardSession(InProcessReader(Applet(MemoryStore(state)), name=f"ssm {identifier}"))
    session.select()
    session.verify_pin(pin)
    return session
