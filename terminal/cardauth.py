"""Card authentication before cardholder verification: what the terminal knows of its card.

A `CardPairing` is the holder's terminal's half of the card authentication key written at
personalisation (docs/apdu.md, INTERNAL AUTHENTICATE key 81; docs/protocol.md, "Card
authentication"). The terminal sends the PIN, the PUK or any plaintext only to a card whose
FCI names the pairing's holder and serial and whose answer to a fresh challenge verifies
under the pairing's key: a card that merely claims the holder's identity learns nothing.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from card_applet import blom, keys


@dataclass(frozen=True, slots=True)
class CardPairing:
    holder_id: str
    serial: bytes
    key: bytes

    def __post_init__(self) -> None:
        blom.identifier_bytes(self.holder_id)  # IdentifierError for a bad holder id
        if not 1 <= len(self.serial) <= 32:
            raise ValueError("a card serial is 1..32 bytes")
        if len(self.key) != keys.CARD_AUTH_KEY_SIZE:
            raise ValueError(f"a card authentication key is {keys.CARD_AUTH_KEY_SIZE} bytes")

    def expected_answer(self, challenge: bytes) -> bytes:
        return keys.card_auth_mac(self.key, self.serial, self.holder_id.encode("utf-8"),
                                  challenge)

    def accepts(self, challenge: bytes, answer: bytes) -> bool:
        return hmac.compare_digest(self.expected_answer(challenge), answer)
