"""What several applet test modules expect of the card (the public template, the FCI) and
the small helpers they share (sealing and opening as the seller, state snapshots)."""

from __future__ import annotations

from card_applet import keys
from card_applet.tlv import tlv
from card_applet.vocabulary import Pso
from tests.card_applet.conftest import (
    HOLDER,
    SELLER,
    SERIAL,
    CardDriver,
    driver_for,
    h,
    pair_key_of,
    personalised_state,
)

OK = 0x9000
P_BYTES = (2**255 - 19).to_bytes(32, "big")
AID_HEX = "F0 45 50 30 37 39 31 39 30 31"
ENCIPHER, DECIPHER = int(Pso.ENCIPHER), int(Pso.DECIPHER)


def public_template(*, lifecycle: int = 5, k: int = 4, tries: str = "03 03 03 03",
                    atc: int = 0, holder: bytes | None = HOLDER.encode()) -> bytes:
    """The C0 template as the card must build it: C7 C4 C5 C2 C3 C6 [C1]."""
    out = (h("C7 02 01 00")
           + h("C4 29 80 01 01 81 20") + P_BYTES + h("82 02") + k.to_bytes(2, "big")
           + h("C5 01") + bytes((lifecycle,))
           + h("C2 08") + SERIAL
           + h("C3 04") + h(tries)
           + h("C6 04") + atc.to_bytes(4, "big"))
    if holder is not None:
        out += bytes((0xC1, len(holder))) + holder
    return out


def fci(template: bytes) -> bytes:
    return (bytes((0x6F, 12 + 2 + len(template))) + h(f"84 0A {AID_HEX}")
            + bytes((0xA5, len(template))) + template)


def pso_data(main_tag: int, value: bytes, aad: bytes = b"", context: bytes = b"") -> bytes:
    data = tlv(main_tag, value)
    if aad:
        data += tlv(0x81, aad)
    if context:
        data += tlv(0x82, context)
    return data


def encipher(card: CardDriver, plain: bytes, aad: bytes = b"", context: bytes = b"") -> bytes:
    reply = card.pso(ENCIPHER, pso_data(0x80, plain, aad, context))
    assert reply.sw == OK, f"{reply.sw:04X}"
    return reply.data


def open_as_seller(box: bytes, aad: bytes = b"", context: bytes = b"") -> tuple[int, bytes]:
    """Open a holder -> seller box with the vectors' pair key, independently of any card."""
    key = keys.seal_key(pair_key_of(HOLDER, SELLER), HOLDER.encode(), SELLER.encode(), context)
    return keys.open_sealed(key, box, aad)


def seal_as_seller(plain: bytes, aad: bytes = b"", context: bytes = b"", atc: int = 7) -> bytes:
    key = keys.seal_key(pair_key_of(HOLDER, SELLER), SELLER.encode(), HOLDER.encode(), context)
    return keys.seal(key, atc, plain, aad)


def unselected_card() -> CardDriver:
    return driver_for(personalised_state())


def assert_unchanged(card: CardDriver, before: tuple) -> None:
    assert snapshot(card) == before


def snapshot(card: CardDriver) -> tuple:
    """The EEPROM, its write count and the transaction counter in RAM."""
    return card.state, card.store.writes, card.applet.atc
