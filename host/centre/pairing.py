"""The holder's keyring of card authentication keys, and opening a card with it.

`nettx authority personalise` writes a random card authentication key onto the card (STORE
DATA DF14, under the personalisation C-MAC) and the same key into a pairing file here:

    HOME/cards/<serial hex>.pairing.json   (0600, in a 0700 directory)
    {"format": 1, "holder": "holder:...", "serial": "<hex>", "card_auth_key": "<64 hex>"}

Every command that sends the card a secret first finds the card's pairing (the file named by
`--pairing`, or the one in HOME for the serial the card names) and runs
`CardSession.authenticate_card` with it: a card without the key gets no PIN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from card_applet import blom
from host.centre.files import write_secret
from terminal.cardauth import CardPairing
from terminal.errors import CardIdentityError, CardNotPairedError, NettxError
from terminal.reader import Reader
from terminal.session import CardInfo, CardSession

PAIRING_FORMAT = 1
PAIRING_DIR = "cards"
MAX_SERIAL = 32


class PairingFileError(NettxError):
    """A pairing file that cannot be read or is not one."""


def write_pairing(path: Path, pairing: CardPairing) -> None:
    doc = {"format": PAIRING_FORMAT, "holder": pairing.holder_id,
           "serial": pairing.serial.hex(), "card_auth_key": pairing.key.hex()}
    write_secret(path, json.dumps(doc, indent=1).encode())


def read_pairing(path: Path) -> CardPairing:
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or doc.get("format") != PAIRING_FORMAT:
            raise ValueError("not a format 1 pairing file")
        if not isinstance(doc["holder"], str):
            raise TypeError("holder must be a string")
        return CardPairing(doc["holder"], bytes.fromhex(doc["serial"]),
                           bytes.fromhex(doc["card_auth_key"]))
    except (OSError, ValueError, KeyError, TypeError, blom.IdentifierError) as exc:
        raise PairingFileError(f"{path}: not a card pairing file ({exc})") from exc


@dataclass(frozen=True, slots=True)
class Keyring:
    """The pairings of one nettx home, one file per card serial."""

    home: Path

    @property
    def dir(self) -> Path:
        return self.home / PAIRING_DIR

    def path_for(self, serial: bytes) -> Path:
        return self.dir / f"{serial.hex()}.pairing.json"

    def save(self, pairing: CardPairing) -> Path:
        path = self.path_for(pairing.serial)
        write_pairing(path, pairing)
        return path

    def pairings(self) -> list[CardPairing]:
        return [read_pairing(path) for path in sorted(self.dir.glob("*.pairing.json"))]

    def holders(self) -> set[str]:
        return {pairing.holder_id for pairing in self.pairings()}

    def find(self, serial: bytes) -> CardPairing:
        path = self.path_for(serial)
        if not path.exists():
            raise CardNotPairedError(
                f"no card authentication key for card {serial.hex()} in {self.dir} (give "
                "--pairing FILE, the file written when the card was personalised): nothing "
                "secret was sent to it")
        pairing = read_pairing(path)
        if pairing.serial != serial:
            raise PairingFileError(f"{path} is for card {pairing.serial.hex()}")
        return pairing


@dataclass(frozen=True, slots=True)
class CardExpectation:
    """Which card a command may send secrets to: the one `pairing_file` names; or the card
    of `holder_id` paired in `home`; or, when `home` pairs the cards of one holder only,
    any of that holder's cards (looked up by the serial the card's FCI names)."""

    home: Path
    pairing_file: Path | None = None
    holder_id: str | None = None

    def pairing_for(self, serial: bytes) -> CardPairing:
        if not 1 <= len(serial) <= MAX_SERIAL:  # the FCI is the card's word: bound it
            raise CardIdentityError(f"the card names a {len(serial)}-byte serial: not a "
                                    "nettx card; nothing secret was sent to it")
        keyring = Keyring(self.home)
        if self.pairing_file is not None:
            pairing = read_pairing(self.pairing_file)
        else:
            if self.holder_id is None:
                holders = keyring.holders()
                if len(holders) > 1:
                    # another holder's genuine card must not get this holder's PIN
                    raise CardIdentityError(
                        f"{keyring.dir} pairs the cards of {len(holders)} holders: name "
                        "yours with --holder-id or --pairing; nothing secret was sent")
            pairing = keyring.find(serial)
        if self.holder_id is not None and pairing.holder_id != self.holder_id:
            raise CardIdentityError(
                f"the card in the reader ({serial.hex()}) is paired to {pairing.holder_id!r}, "
                f"not {self.holder_id!r}: nothing secret was sent to it")
        return pairing


def authenticated_session(reader: Reader, expect: CardExpectation) -> CardSession:
    """A session on `reader` whose card has proved it is the expected one (see
    CardSession.authenticate_card); raises CardAuthenticationError before any secret."""
    session = CardSession(reader)
    info: CardInfo = session.select()
    session.authenticate_card(expect.pairing_for(info.serial))
    return session
