"""CardSession: the nettx card's verbs, over any reader.

Methods read like the card's manual (docs/apdu.md); each is one or two APDUs through the
protocol stack, and every failure is an ApduError subclass carrying the status word.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from card_applet.apdu import EXTENDED_MAX_LE, SHORT_MAX_LE
from card_applet.sw import SW
from card_applet.tlv import TlvError, parse, parse_unique, tlv
from card_applet.vocabulary import (
    AID,
    MSE_SET_INTERNAL,
    MSE_TEMPLATE_AT,
    PIN_REFERENCE,
    TAG_AAD,
    TAG_CONTEXT,
    TAG_CRYPTOGRAM,
    TAG_DYNAMIC_AUTH,
    TAG_INITIATOR_NONCE,
    TAG_KEY_REFERENCE,
    TAG_OWN_PROOF,
    TAG_PEER_PROOF,
    TAG_PLAIN,
    TAG_RECEIVE_KEY,
    TAG_RESPONDER_NONCE,
    TAG_SEND_KEY,
    TAG_SESSION_ROLE,
    DataObject,
    Fci,
    Ins,
    KeyReference,
    Lifecycle,
    Pso,
    SchemeTag,
    encode_pin,
)
from terminal.cardauth import CardPairing
from terminal.errors import (
    ApduError,
    CardAuthenticationError,
    CardIdentityError,
    NettxError,
    WrongPinError,
)
from terminal.protocol import ApduProtocol
from terminal.reader import Reader

CARD_AUTH_CHALLENGE = 32
_PSO_NAMES = {operation: f"PSO {operation.name}" for operation in Pso}  # error messages


class CardDataError(NettxError):
    """The card answered 9000 with data this terminal cannot parse."""


@dataclass(frozen=True, slots=True)
class HandshakeAnswer:
    """GENERAL AUTHENTICATE's answer (docs/apdu.md 3.20): the card's proof, and the session
    keys once the card has checked the peer's proof (None before)."""

    proof: bytes
    send_key: bytes | None = None
    receive_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class CardInfo:
    serial: bytes
    lifecycle: Lifecycle
    version: tuple[int, int]
    scheme_version: int
    prime: int
    k: int
    pin_tries: int
    pin_max: int
    puk_tries: int
    puk_max: int
    atc: int
    holder_id: str | None

    @property
    def personalised(self) -> bool:
        return self.lifecycle == Lifecycle.OPERATIONAL

    @classmethod
    def from_template(cls, template: bytes) -> CardInfo:
        try:
            objects = {item.tag: item.value for item in parse(template)}
            scheme = {item.tag: item.value for item in parse(objects[DataObject.SCHEME])}
            tries = objects[DataObject.TRIES]
            holder = objects.get(DataObject.HOLDER_ID)
            return cls(
                serial=objects[DataObject.SERIAL],
                lifecycle=Lifecycle(objects[DataObject.LIFECYCLE][0]),
                version=(objects[DataObject.VERSION][0], objects[DataObject.VERSION][1]),
                scheme_version=scheme[SchemeTag.VERSION][0],
                prime=int.from_bytes(scheme[SchemeTag.PRIME], "big"),
                k=int.from_bytes(scheme[SchemeTag.K], "big"),
                pin_tries=tries[0], pin_max=tries[1], puk_tries=tries[2], puk_max=tries[3],
                atc=int.from_bytes(objects[DataObject.ATC], "big"),
                holder_id=holder.decode("utf-8") if holder is not None else None,
            )
        except (KeyError, IndexError, ValueError, TlvError) as exc:
            raise CardDataError(f"unparseable card data: {exc}") from exc


class CardSession:
    def __init__(self, reader: Reader, *, extended: bool | None = None) -> None:
        self.reader = reader
        self.protocol = ApduProtocol(reader, extended=extended)
        self._max_le = EXTENDED_MAX_LE if self.protocol.extended else SHORT_MAX_LE
        #: the card's identity once authenticate_card() passed: host flows send secrets
        #: (PIN, PUK, plaintext) only on a session where this is set
        self.authenticated: CardInfo | None = None
        self._proved_once = False

    # -- application ------------------------------------------------------------------------

    def select(self) -> CardInfo:
        fci = self.protocol.send_apdu(0x00, Ins.SELECT, 0x04, 0x00, AID, SHORT_MAX_LE)
        try:
            (outer,) = parse(fci)
            inner = {item.tag: item.value for item in parse(outer.value)}
            return CardInfo.from_template(inner[Fci.PROPRIETARY])
        except (ValueError, KeyError, TlvError) as exc:
            raise CardDataError(f"unparseable FCI: {exc}") from exc

    def get_data(self, tag: int) -> bytes:
        return self.protocol.send_apdu(0x00, Ins.GET_DATA, tag >> 8, tag & 0xFF, le=SHORT_MAX_LE)

    def info(self) -> CardInfo:
        return CardInfo.from_template(self.get_data(DataObject.ALL))

    # -- card authentication ----------------------------------------------------------------

    def authenticate_card(self, pairing: CardPairing) -> CardInfo:
        """Prove the card in the reader is the one `pairing` was written for, before anything
        secret goes to it: SELECT, compare the FCI's holder id and serial with the pairing's,
        then a fresh challenge in INTERNAL AUTHENTICATE (key 81) whose answer must verify
        under the pairing's key. Raises CardAuthenticationError (nothing secret was sent)."""
        self.authenticated = None
        self.protocol.card_lost = False
        info = self.select()
        if info.holder_id != pairing.holder_id or info.serial != pairing.serial:
            raise CardIdentityError(
                f"the card in the reader is {info.serial.hex()} of {info.holder_id!r}, not "
                f"the expected {pairing.serial.hex()} of {pairing.holder_id!r}: nothing secret "
                "was sent to it")
        challenge = secrets.token_bytes(CARD_AUTH_CHALLENGE)
        try:
            answer = self.internal_authenticate(challenge, KeyReference.CARD_AUTH)
        except ApduError as exc:
            if exc.sw == SW.REFERENCED_DATA_NOT_FOUND:
                raise CardAuthenticationError(
                    f"card {info.serial.hex()} holds no card authentication key (made before "
                    "card authentication existed, or not genuine): failed card "
                    "authentication; nothing secret was sent to it") from exc
            raise CardAuthenticationError(
                f"card {info.serial.hex()} refused card authentication ({exc}): not the "
                "holder's genuine card; nothing secret was sent to it") from exc
        if not pairing.accepts(challenge, answer):
            raise CardAuthenticationError(
                f"card {info.serial.hex()} failed card authentication: it claims to be "
                f"{pairing.holder_id!r}'s card but does not hold its key; nothing secret was "
                "sent to it")
        self.authenticated, self._proved_once = info, True
        return info

    def require_authenticated(self) -> CardInfo:
        """The identity authenticate_card() proved; refuses a session where it did not run,
        or whose card was lost since (another may have taken its place in the reader)."""
        self._still_the_proved_card()
        if self.authenticated is None:
            raise CardAuthenticationError("the card was not authenticated (no "
                                          "authenticate_card): nothing secret is sent to it")
        return self.authenticated

    def _still_the_proved_card(self) -> None:
        """Before a secret goes out on a session that authenticated its card: the reader
        must not have lost that card since. A removal, a dropped channel or a timeout ends
        the proof; a reader that then accepts the next card (an embedded reader, a PC/SC
        slot) would otherwise hand the PIN to whoever came next."""
        if self._proved_once and self.protocol.card_lost:
            self.authenticated = None
            raise CardAuthenticationError(
                "the card left the reader after it was authenticated: authenticate the card "
                "in the reader again; nothing secret was sent to it")

    # -- holder verification ----------------------------------------------------------------

    def verify_pin(self, pin: str) -> None:
        self._still_the_proved_card()
        self.protocol.send_apdu(0x00, Ins.VERIFY, 0x00, PIN_REFERENCE,
                                encode_pin(pin))

    def pin_tries_left(self) -> int:
        """Status query (VERIFY without data): tries left, or -1 once verified."""
        try:
            self.protocol.send_apdu(0x00, Ins.VERIFY, 0x00, PIN_REFERENCE)
        except WrongPinError as err:
            return err.tries_left
        return -1

    def reset_verification(self) -> None:
        self.protocol.send_apdu(0x00, Ins.VERIFY, 0xFF, PIN_REFERENCE)

    def change_pin(self, old: str, new: str) -> None:
        self._still_the_proved_card()
        data = encode_pin(old) + encode_pin(new)
        self.protocol.send_apdu(0x00, Ins.CHANGE_REFERENCE_DATA, 0x00, PIN_REFERENCE, data)

    def unblock_pin(self, puk: str, new_pin: str | None = None) -> None:
        self._still_the_proved_card()
        data = encode_pin(puk)
        p1 = 0x01
        if new_pin is not None:
            data += encode_pin(new_pin)
            p1 = 0x00
        self.protocol.send_apdu(0x00, Ins.RESET_RETRY_COUNTER, p1, PIN_REFERENCE, data)

    # -- keys and cryptograms ---------------------------------------------------------------

    def set_peer(self, peer_id: str) -> None:
        data = tlv(TAG_KEY_REFERENCE, peer_id.encode("utf-8"))
        self.protocol.send_apdu(0x00, Ins.MANAGE_SECURITY_ENVIRONMENT, MSE_SET_INTERNAL,
                                MSE_TEMPLATE_AT, data)

    def _pso(self, operation: Pso, main_tag: int, value: bytes, aad: bytes,
             context: bytes) -> bytes:
        self._still_the_proved_card()
        data = tlv(main_tag, value)
        if aad:
            data += tlv(TAG_AAD, aad)
        if context:
            data += tlv(TAG_CONTEXT, context)
        return self.protocol.send_apdu(0x00, Ins.PERFORM_SECURITY_OPERATION, operation >> 8,
                                       operation & 0xFF, data, self._max_le,
                                       name=_PSO_NAMES[operation])

    def encrypt(self, plaintext: bytes, aad: bytes = b"", context: bytes = b"") -> bytes:
        """Seal for the peer set by set_peer(); see docs/apdu.md for the box format."""
        return self._pso(Pso.ENCIPHER, TAG_PLAIN, plaintext, aad, context)

    def decrypt(self, sealed: bytes, aad: bytes = b"", context: bytes = b"") -> bytes:
        return self._pso(Pso.DECIPHER, TAG_CRYPTOGRAM, sealed, aad, context)

    # -- confirmation (claim 7) -------------------------------------------------------------

    def get_challenge(self, length: int = 16) -> bytes:
        return self.protocol.send_apdu(0x00, Ins.GET_CHALLENGE, 0, 0, le=length)

    def internal_authenticate(self, challenge: bytes,
                              key: KeyReference = KeyReference.PEER) -> bytes:
        return self.protocol.send_apdu(0x00, Ins.INTERNAL_AUTHENTICATE, 0, key, challenge,
                                       SHORT_MAX_LE)

    def external_authenticate(self, response: bytes) -> None:
        self.protocol.send_apdu(0x00, Ins.EXTERNAL_AUTHENTICATE, 0, 0, response)

    def general_authenticate(self, initiator: bool, initiator_nonce: bytes,
                             responder_nonce: bytes,
                             peer_proof: bytes | None = None) -> HandshakeAnswer:
        """A session handshake with the peer set by set_peer(): this card's proof over both
        nonces, and with `peer_proof` (checked on the card: 6300 if wrong) the session keys."""
        self._still_the_proved_card()
        body = (tlv(TAG_SESSION_ROLE, b"\x01" if initiator else b"\x02")
                + tlv(TAG_INITIATOR_NONCE, initiator_nonce)
                + tlv(TAG_RESPONDER_NONCE, responder_nonce))
        if peer_proof is not None:
            body += tlv(TAG_PEER_PROOF, peer_proof)
        data = self.protocol.send_apdu(0x00, Ins.GENERAL_AUTHENTICATE_BER, 0, KeyReference.PEER,
                                       tlv(TAG_DYNAMIC_AUTH, body), SHORT_MAX_LE)
        try:
            fields = parse_unique(parse_unique(data, {TAG_DYNAMIC_AUTH})[TAG_DYNAMIC_AUTH],
                                  {TAG_OWN_PROOF, TAG_SEND_KEY, TAG_RECEIVE_KEY})
            return HandshakeAnswer(fields[TAG_OWN_PROOF], fields.get(TAG_SEND_KEY),
                                   fields.get(TAG_RECEIVE_KEY))
        except (TlvError, KeyError) as exc:
            raise CardDataError(f"GENERAL AUTHENTICATE answer: {exc}") from exc

    def prove_to(self, verifier: CardSession) -> None:
        """Challenge-response: `verifier` challenges, this card answers under the
        this -> verifier direction of their pair key, and the verifier checks it.
        Each side must have set the other as its peer."""
        challenge = verifier.get_challenge()
        verifier.external_authenticate(self.internal_authenticate(challenge))
