"""The nettx applet: ISO/IEC 7816-4 commands over a Blom/KPS key row.

Theory of operation. `Applet.process(command) -> response` is the only edge, bytes in and
bytes out; no I/O happens here but `CardStore.commit`. `process` runs three small stages:

1. class check and decode (CommandApdu.from_bytes): a malformed APDU is a status word;
2. command chaining (CLA b5, ISO 7816-4 5.4.1): partial commands are buffered, answered
   9000, and the last one executes with the whole data field;
3. dispatch by (class, INS) to a handler, then response chaining: a response longer than
   Ne is cut and the rest handed out by GET RESPONSE (61xx).

Each handler states its preconditions first and raises `CardError(SW.X)` before touching
anything, so a rejected command leaves both persistent and volatile state as they were.
Persistent changes are whole-state commits (see state.py). The transaction counter is the
one value kept in RAM between commits: the EEPROM holds the end of a reserved block of
counter values, and ENCIPHER commits only to reserve the next block (`_spend_counter`).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from card_applet import blom, files, keys, pin
from card_applet.apdu import (
    CLA_CHAINING,
    EXTENDED_MAX_LE,
    SHORT_MAX_LE,
    ApduFormatError,
    CommandApdu,
)
from card_applet.pairkeys import PairKeyCache
from card_applet.state import PIN_MAX_TRIES, PUK_MAX_TRIES, CardStore, PersistentState
from card_applet.sw import SW, CardError, verify_failed
from card_applet.tlv import TlvError, parse_unique, tlv
from card_applet.vocabulary import (
    AID,
    ATC_BLOCK,
    ATC_MAX,
    MSE_SET_P1,
    MSE_TEMPLATES,
    PIN_BLOCK_SIZE,
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
    PersoObject,
    Pso,
    SchemeTag,
    is_proprietary,
    is_valid_pin_block,
)

log = logging.getLogger(__name__)

APPLET_VERSION = (1, 0)
SCHEME_VERSION = 1
MAX_K = 1024
MAX_COMMAND_DATA = MAX_K * 32 + 256  # a whole row in one (chained or extended) command
MIN_PARTIAL_AID = 5
MIN_CHALLENGE, MAX_CHALLENGE = 8, 256
MAX_AUTH_CHALLENGE = 64
MIN_CARD_AUTH_CHALLENGE = 16  # card authentication: too short a challenge could be tabled
MAX_CONTEXT = 64


@dataclass
class PersoSession:
    key: bytes
    counter: int = 0


@dataclass
class Peer:
    identifier: bytes
    pair_key: bytes
    authenticated: bool = False


@dataclass
class Volatile:
    """RAM: cleared by power-off, reset and (except `selected`) by SELECT."""

    selected: bool = False
    pin_verified: bool = False
    peer: Peer | None = None
    challenge: bytes | None = None
    perso: PersoSession | None = None
    chain_header: tuple[int, int, int, int] | None = None
    chain_data: bytearray = field(default_factory=bytearray)
    pending_response: bytes = b""
    selection: files.Selection | None = None  # None: the MF, no current file (reset)


@dataclass(frozen=True, slots=True)
class Reply:
    """Response data with a warning status word instead of 9000 (data never exceeds Ne)."""

    data: bytes
    sw: int


Handler = Callable[["Applet", CommandApdu], "bytes | Reply"]
_INTER_INDUSTRY: dict[int, Handler] = {}
_PROPRIETARY: dict[int, Handler] = {}
# the file system belongs to the card, not to the application: usable with nothing selected
_WITHOUT_APPLICATION = frozenset({Ins.SELECT.value, Ins.READ_BINARY.value})


# Plain ints for what every command is checked against: naming an IntEnum member costs a
# class attribute lookup and a subclass comparison (~0.2 µs each in CPython 3.11).
_GET_RESPONSE = Ins.GET_RESPONSE.value
_GET_DATA_ALL = DataObject.ALL.value
_ENCIPHER, _DECIPHER = Pso.ENCIPHER.value, Pso.DECIPHER.value
_OK = b"\x90\x00"
# what each command's data field may hold, built once
_MSE_FIELDS = frozenset({TAG_KEY_REFERENCE})
_ENCIPHER_FIELDS = frozenset({TAG_PLAIN, TAG_AAD, TAG_CONTEXT})
_DECIPHER_FIELDS = frozenset({TAG_CRYPTOGRAM, TAG_AAD, TAG_CONTEXT})
_DYNAMIC_AUTH = frozenset({TAG_DYNAMIC_AUTH})
_HANDSHAKE_FIELDS = frozenset({TAG_SESSION_ROLE, TAG_INITIATOR_NONCE, TAG_RESPONDER_NONCE,
                               TAG_PEER_PROOF})


def command(ins: Ins) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        (_PROPRIETARY if ins.proprietary else _INTER_INDUSTRY)[ins] = handler
        return handler

    return register


class Applet:
    def __init__(self, store: CardStore, pair_keys: PairKeyCache | None = None) -> None:
        self.store = store
        self.state: PersistentState = store.load()
        self.v = Volatile()
        # RAM, lost on reset but kept across SELECT (a card's clear-on-reset memory): the
        # highest transaction counter value spent, by a box or skipped; never above the
        # reservation in EEPROM. A new card process starts from the reservation.
        self.atc = self.state.atc_reserved
        # RAM, as Volatile, and cleared with it (pairkeys.py says why that is safe); a
        # software key module passes one cache to all the applets of its pool
        self.pair_keys = pair_keys if pair_keys is not None else PairKeyCache()
        self._row_cache: tuple[bytes, list[int]] | None = None
        self.executed = 0  # commands that reached a handler (for tests and benches)
        self.files = files.card_files(AID, self.state.serial, MAX_COMMAND_DATA, EXTENDED_MAX_LE)

    # -- power ------------------------------------------------------------------------------

    def power_on(self) -> None:
        # what RAM held of the counter's block is gone: the rest of the block is skipped,
        # never reused, and the next ENCIPHER reserves a new one
        self.atc = self.state.atc_reserved
        self._new_session(Volatile())

    power_off = power_on
    reset = power_on

    def _new_session(self, volatile: Volatile) -> None:
        """Every path that clears RAM: the pair keys of the last session go with it."""
        self.v = volatile
        self.pair_keys.clear()

    # -- the edge ---------------------------------------------------------------------------

    def process(self, raw: bytes) -> bytes:
        try:
            return self._process(raw)
        except CardError as err:
            self._drop_chain()
            return err.sw.to_bytes(2, "big")
        except Exception:  # a bug must not take the card down or reach the terminal
            log.exception("internal error on command %s", raw[:5].hex())
            self._drop_chain()
            return SW.UNKNOWN.to_bytes(2, "big")

    def _process(self, raw: bytes) -> bytes:
        if not raw:
            raise CardError(SW.WRONG_LENGTH)
        cla = raw[0]
        # CLA 00, what almost every command carries, passes every class check
        proprietary = self._check_class(cla) if cla else False
        try:
            cmd = CommandApdu.from_bytes(raw)
        except ApduFormatError as exc:  # the terminal's mistake: ISO's answer is 6700
            raise CardError(SW.WRONG_LENGTH) from exc
        if len(cmd.data) > MAX_COMMAND_DATA:
            raise CardError(SW.WRONG_LENGTH)
        ins = cmd.ins
        if not proprietary and ins == _GET_RESPONSE:
            return self._get_response(cmd)
        v = self.v
        v.pending_response = b""
        chain_header = v.chain_header
        if chain_header is not None and chain_header != (cla & ~0x10, ins, cmd.p1, cmd.p2):
            raise CardError(SW.LAST_COMMAND_EXPECTED)
        handler = (_PROPRIETARY if proprietary else _INTER_INDUSTRY).get(ins)
        if handler is None:
            raise CardError(SW.INS_NOT_SUPPORTED)
        # before buffering a chain part: an unselected applet refuses the first part at once
        if not v.selected and ins not in _WITHOUT_APPLICATION:
            raise CardError(SW.CONDITIONS_NOT_SATISFIED)
        if cla & CLA_CHAINING:  # the class check refused CLA FF, the one exception
            if len(v.chain_data) + len(cmd.data) > MAX_COMMAND_DATA:
                raise CardError(SW.NOT_ENOUGH_MEMORY)
            v.chain_header = (cla & ~0x10, ins, cmd.p1, cmd.p2)
            v.chain_data += cmd.data
            return _OK
        if chain_header is not None:
            whole = bytes(v.chain_data) + cmd.data
            self._drop_chain()
            if len(whole) > MAX_COMMAND_DATA:
                raise CardError(SW.NOT_ENOUGH_MEMORY)
            cmd = CommandApdu(chain_header[0], ins, cmd.p1, cmd.p2, whole, cmd.le, True)
        self.executed += 1
        return self._respond(handler(self, cmd), cmd.le)

    @staticmethod
    def _check_class(cla: int) -> bool:
        """Returns True for a proprietary class. ISO 7816-4 5.4.1."""
        if cla == 0xFF or 0x20 <= cla <= 0x3F or 0xA0 <= cla <= 0xFE:
            raise CardError(SW.CLA_NOT_SUPPORTED)
        if 0x40 <= cla <= 0x7F or cla & 0x03:
            raise CardError(SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
        if cla & 0x0C:
            raise CardError(SW.SECURE_MESSAGING_NOT_SUPPORTED)
        return is_proprietary(cla)

    def _drop_chain(self) -> None:
        self.v.chain_header = None
        self.v.chain_data = bytearray()

    def _respond(self, data: bytes | Reply, le: int | None) -> bytes:
        limit = le or 0
        if data.__class__ is Reply:
            assert len(data.data) <= limit
            return data.data + data.sw.to_bytes(2, "big")
        if len(data) <= limit:
            return data + _OK
        self.v.pending_response = data[limit:]
        return data[:limit] + self._more_bytes()

    def _more_bytes(self) -> bytes:
        return bytes((0x61, min(len(self.v.pending_response), 256) & 0xFF))

    def _get_response(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise CardError(SW.INCORRECT_P1P2)
        if cmd.data:
            raise CardError(SW.WRONG_LENGTH)
        if not self.v.pending_response:
            raise CardError(SW.CONDITIONS_NOT_SATISFIED)
        # no Le (case 1, as yubikit sends it in extended mode) asks for as much as a short
        # response carries, as real cards answer it; the rest follows with 61xx
        ne = cmd.le or SHORT_MAX_LE
        chunk = self.v.pending_response[:ne]
        self.v.pending_response = self.v.pending_response[ne:]
        if self.v.pending_response:
            return chunk + self._more_bytes()
        return chunk + b"\x90\x00"

    # -- shared preconditions --------------------------------------------------------------

    def _commit(self, new: PersistentState) -> None:
        try:
            self.store.commit(new)
        except OSError as exc:
            log.error("EEPROM write failed: %s", exc)
            raise CardError(SW.MEMORY_FAILURE) from exc
        self.state = new

    def _require_lifecycle(self, lifecycle: Lifecycle) -> None:
        if self.state.lifecycle != lifecycle:
            raise CardError(SW.CONDITIONS_NOT_SATISFIED)

    def _require_pin(self) -> None:
        self._require_lifecycle(Lifecycle.OPERATIONAL)
        if not self.v.pin_verified:
            raise CardError(SW.SECURITY_STATUS_NOT_SATISFIED)

    def _require_peer(self) -> Peer:
        if self.v.peer is None:
            raise CardError(SW.CONDITIONS_NOT_SATISFIED)
        return self.v.peer

    def _require_pin_command(self, cmd: CommandApdu, p1: tuple[int, ...]) -> None:
        """VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER: an operational card, a P1
        the command defines, and the one PIN this card holds as P2."""
        self._require_lifecycle(Lifecycle.OPERATIONAL)
        if cmd.p1 not in p1:
            raise CardError(SW.INCORRECT_P1P2)
        if cmd.p2 != PIN_REFERENCE:
            raise CardError(SW.REFERENCED_DATA_NOT_FOUND)

    @staticmethod
    def _require_p1p2(cmd: CommandApdu, p1: int, p2: int) -> None:
        if (cmd.p1, cmd.p2) != (p1, p2):
            raise CardError(SW.INCORRECT_P1P2)

    def _row(self) -> list[int]:
        raw = self.state.row
        assert raw is not None
        if self._row_cache is None or self._row_cache[0] is not raw:
            self._row_cache = (raw, blom.row_from_bytes(raw))
        return self._row_cache[1]

    def _cached_pair_key(self, peer_id: bytes) -> bytes | None:
        """The pair key with `peer_id` if the RAM cache holds it (then `peer_id` passed MSE's
        checks when it was derived: the cache keeps only keys of identifiers MSE accepted)."""
        raw = self.state.row
        assert raw is not None
        self.pair_keys.bind(raw)
        return self.pair_keys.get(peer_id)

    def _pair_key(self, peer_id: bytes, x: int) -> bytes:
        """The pair key with `peer_id`, by Horner over the row; kept in the RAM cache."""
        assert self.state.holder_id is not None
        element = blom.shared_element(self._row(), x)
        key = blom.pair_key(element, self.state.holder_id, peer_id)
        self.pair_keys.put(peer_id, key)
        return key

    def _check_reference(self, block: bytes, stored_field: str, tries_field: str,
                         max_tries: int) -> None:
        """Anti-tearing: the try counter is decremented and persisted *before* the
        comparison, and restored only after a match, so cutting power mid-command never
        yields a free guess."""
        tries = getattr(self.state, tries_field)
        if tries == 0:
            raise CardError(SW.AUTH_METHOD_BLOCKED)
        self._commit(self.state.with_(**{tries_field: tries - 1}))
        stored = getattr(self.state, stored_field)
        if not pin.matches(self.state.pin_salt, block, stored):
            raise CardError(verify_failed(tries - 1))
        self._commit(self.state.with_(**{tries_field: max_tries}))

    def _spend_counter(self) -> int:
        """The next transaction counter value, spent before the cryptogram exists.

        Anti-tearing: a value above the EEPROM's reservation is used only after the next
        reservation (the old one + ATC_BLOCK, capped at ATC_MAX) is committed, so whenever
        power goes the EEPROM covers every value any box carried, and the card starts again
        above it: a tear, a kill or a reset skips the rest of a block and never reuses a
        value. A failed commit (6581) spends nothing."""
        value = self.atc + 1
        if value > self.state.atc_reserved:
            reserved = min(self.state.atc_reserved + ATC_BLOCK, ATC_MAX)
            self._commit(self.state.with_(atc_reserved=reserved))
        self.atc = value
        return value

    # -- public data ------------------------------------------------------------------------

    def _data_object(self, tag: int) -> bytes:
        s = self.state
        if tag == DataObject.HOLDER_ID and s.holder_id is not None:
            return s.holder_id
        if tag == DataObject.SERIAL:
            return s.serial
        if tag == DataObject.TRIES:
            return bytes((s.pin_tries, PIN_MAX_TRIES, s.puk_tries, PUK_MAX_TRIES))
        if tag == DataObject.SCHEME:
            return (tlv(SchemeTag.VERSION, bytes((SCHEME_VERSION,)))
                    + tlv(SchemeTag.PRIME, blom.P.to_bytes(32, "big"))
                    + tlv(SchemeTag.K, s.k.to_bytes(2, "big")))
        if tag == DataObject.LIFECYCLE:
            return bytes((s.lifecycle,))
        if tag == DataObject.ATC:
            return self.atc.to_bytes(4, "big")  # the next box carries this + 1
        if tag == DataObject.VERSION:
            return bytes(APPLET_VERSION)
        raise CardError(SW.REFERENCED_DATA_NOT_FOUND)

    def _public_template(self) -> bytes:
        out = b""
        for tag in (DataObject.VERSION, DataObject.SCHEME, DataObject.LIFECYCLE,
                    DataObject.SERIAL, DataObject.TRIES, DataObject.ATC, DataObject.HOLDER_ID):
            try:
                out += tlv(tag, self._data_object(tag))
            except CardError:
                continue  # holder id is absent on a blank card
        return out

    # -- inter-industry commands ------------------------------------------------------------

    @command(Ins.SELECT)
    def select(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 in (0x00, 0x01, 0x02, 0x03, 0x08, 0x09):
            return self._select_file(cmd)
        if cmd.p1 != 0x04 or cmd.p2 & 0xF0 or cmd.p2 & 0x0C not in (0x00, 0x0C):
            raise CardError(SW.INCORRECT_P1P2)
        occurrence = cmd.p2 & 0x03
        if not (MIN_PARTIAL_AID <= len(cmd.data) <= 16 and AID.startswith(cmd.data)):
            raise CardError(SW.FILE_NOT_FOUND)
        if occurrence in (0x02, 0x03) and self.v.selected:
            raise CardError(SW.FILE_NOT_FOUND)  # there is no next/previous application
        adf = self.files.application
        self._new_session(Volatile(selected=True, selection=files.Selection(adf, adf)))
        if cmd.p2 & 0x0C == 0x0C:
            return b""
        return tlv(Fci.TEMPLATE, tlv(Fci.DF_NAME, AID) + tlv(Fci.PROPRIETARY,
                                                            self._public_template()))

    def _select_file(self, cmd: CommandApdu) -> bytes:
        answer = files.check_p2(cmd.p2)
        new = files.select(self.files, self._selection(), cmd.p1, cmd.data)
        if self.v.selected and new.df is not self.files.application:
            # leaving the application DF ends its session (PIN, peer, challenge, chain), as
            # a DF's security status does not survive leaving the DF (ISO 7816-4 5.4)
            self._new_session(Volatile())
        self.v.selection = new
        assert new.file is not None
        return files.select_response(new.file, answer)

    def _selection(self) -> files.Selection:
        return self.v.selection or files.Selection(self.files.mf)

    @command(Ins.READ_BINARY)
    def read_binary(self, cmd: CommandApdu) -> Reply:
        read = files.read_binary(self._selection(), cmd.p1, cmd.p2, cmd.data, cmd.le)
        self.v.selection = read.selection
        return Reply(read.data, SW.END_OF_FILE if read.short else SW.OK)

    @command(Ins.GET_DATA)
    def get_data(self, cmd: CommandApdu) -> bytes:
        if cmd.data:
            raise CardError(SW.WRONG_LENGTH)
        tag = (cmd.p1 << 8) | cmd.p2
        if tag == _GET_DATA_ALL:
            return self._public_template()
        return self._data_object(tag)

    @command(Ins.VERIFY)
    def verify(self, cmd: CommandApdu) -> bytes:
        self._require_pin_command(cmd, (0x00, 0xFF))
        if cmd.p1 == 0xFF:  # ISO 7816-4:2013 11.5.6: reset the verification status
            if cmd.data:
                raise CardError(SW.WRONG_LENGTH)
            self.v.pin_verified = False
            return b""
        if not cmd.data:  # status query: no try consumed
            if self.state.pin_tries == 0:
                raise CardError(SW.AUTH_METHOD_BLOCKED)
            if self.v.pin_verified:
                return b""
            raise CardError(verify_failed(self.state.pin_tries))
        if len(cmd.data) != PIN_BLOCK_SIZE:
            raise CardError(SW.WRONG_LENGTH)
        if not is_valid_pin_block(cmd.data):
            raise CardError(SW.WRONG_DATA)
        self.v.pin_verified = False
        self._check_reference(cmd.data, "pin_hash", "pin_tries", PIN_MAX_TRIES)
        self.v.pin_verified = True
        return b""

    @command(Ins.CHANGE_REFERENCE_DATA)
    def change_reference_data(self, cmd: CommandApdu) -> bytes:
        self._require_pin_command(cmd, (0x00,))
        if len(cmd.data) != 2 * PIN_BLOCK_SIZE:
            raise CardError(SW.WRONG_LENGTH)
        old, new = cmd.data[: PIN_BLOCK_SIZE], cmd.data[PIN_BLOCK_SIZE :]
        if not (is_valid_pin_block(old) and is_valid_pin_block(new)):
            raise CardError(SW.WRONG_DATA)
        self.v.pin_verified = False
        self._check_reference(old, "pin_hash", "pin_tries", PIN_MAX_TRIES)
        self._commit(self.state.with_(pin_hash=pin.pin_hash(self.state.pin_salt, new)))
        self.v.pin_verified = True
        return b""

    @command(Ins.RESET_RETRY_COUNTER)
    def reset_retry_counter(self, cmd: CommandApdu) -> bytes:
        self._require_pin_command(cmd, (0x00, 0x01))
        expected = 2 * PIN_BLOCK_SIZE if cmd.p1 == 0x00 else PIN_BLOCK_SIZE
        if len(cmd.data) != expected:
            raise CardError(SW.WRONG_LENGTH)
        puk, new = cmd.data[: PIN_BLOCK_SIZE], cmd.data[PIN_BLOCK_SIZE :]
        if not is_valid_pin_block(puk) or (new and not is_valid_pin_block(new)):
            raise CardError(SW.WRONG_DATA)
        self._check_reference(puk, "puk_hash", "puk_tries", PUK_MAX_TRIES)
        changes: dict[str, object] = {"pin_tries": PIN_MAX_TRIES}
        if new:
            changes["pin_hash"] = pin.pin_hash(self.state.pin_salt, new)
        self._commit(self.state.with_(**changes))
        self.v.pin_verified = False
        return b""

    @command(Ins.MANAGE_SECURITY_ENVIRONMENT)
    def manage_security_environment(self, cmd: CommandApdu) -> bytes:
        self._require_lifecycle(Lifecycle.OPERATIONAL)
        if cmd.p1 not in MSE_SET_P1 or cmd.p2 not in MSE_TEMPLATES:
            raise CardError(SW.INCORRECT_P1P2)
        try:
            peer_id = parse_unique(cmd.data, _MSE_FIELDS)[TAG_KEY_REFERENCE]
        except (TlvError, KeyError) as exc:
            raise CardError(SW.WRONG_DATA) from exc
        if peer_id == self.state.holder_id:
            raise CardError(SW.WRONG_DATA)
        # a peer in the RAM cache passed the identifier checks below when it was derived
        key = self._cached_pair_key(peer_id)
        if key is None:
            try:
                x = blom.x_of(peer_id)
            except blom.IdentifierError as exc:
                raise CardError(SW.WRONG_DATA) from exc
            if x == 0:
                raise CardError(SW.WRONG_DATA)
            key = self._pair_key(peer_id, x)
        self.v.peer = Peer(peer_id, key)
        self.v.challenge = None
        return b""

    @command(Ins.PERFORM_SECURITY_OPERATION)
    def perform_security_operation(self, cmd: CommandApdu) -> bytes:
        operation = (cmd.p1 << 8) | cmd.p2
        if operation != _ENCIPHER and operation != _DECIPHER:
            raise CardError(SW.INCORRECT_P1P2)
        self._require_pin()
        peer = self._require_peer()
        own = self.state.holder_id
        assert own is not None
        enciphering = operation == _ENCIPHER
        main_tag = TAG_PLAIN if enciphering else TAG_CRYPTOGRAM
        try:
            fields = parse_unique(cmd.data, _ENCIPHER_FIELDS if enciphering
                                  else _DECIPHER_FIELDS)
        except TlvError as exc:
            raise CardError(SW.WRONG_DATA) from exc
        context = fields.get(TAG_CONTEXT, b"")
        if main_tag not in fields or len(context) > MAX_CONTEXT:
            raise CardError(SW.WRONG_DATA)
        aad = fields.get(TAG_AAD, b"")
        if enciphering:
            if self.atc >= ATC_MAX:
                raise CardError(SW.CONDITIONS_NOT_SATISFIED)
            key = keys.seal_key(peer.pair_key, own, peer.identifier, context)
            return keys.seal(key, self._spend_counter(), fields[main_tag], aad)
        key = keys.seal_key(peer.pair_key, peer.identifier, own, context)
        try:
            _, plaintext = keys.open_sealed(key, fields[main_tag], aad)
        except keys.IntegrityError as exc:
            raise CardError(SW.INCORRECT_SM_DATA) from exc
        except ValueError as exc:
            raise CardError(SW.WRONG_DATA) from exc
        return plaintext

    @command(Ins.GET_CHALLENGE)
    def get_challenge(self, cmd: CommandApdu) -> bytes:
        self._require_p1p2(cmd, 0, 0)
        if cmd.data or cmd.le is None or cmd.le < MIN_CHALLENGE:
            raise CardError(SW.WRONG_LENGTH)
        self.v.challenge = secrets.token_bytes(min(cmd.le, MAX_CHALLENGE))
        return self.v.challenge

    @command(Ins.INTERNAL_AUTHENTICATE)
    def internal_authenticate(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 != 0x00:
            raise CardError(SW.INCORRECT_P1P2)
        if cmd.p2 == KeyReference.CARD_AUTH:
            return self._authenticate_card(cmd)
        if cmd.p2 != KeyReference.PEER:
            raise CardError(SW.REFERENCED_DATA_NOT_FOUND)
        if not MIN_CHALLENGE <= len(cmd.data) <= MAX_AUTH_CHALLENGE:
            raise CardError(SW.WRONG_LENGTH)
        self._require_pin()
        peer = self._require_peer()
        assert self.state.holder_id is not None
        key = keys.confirm_key(peer.pair_key, self.state.holder_id, peer.identifier)
        return keys.confirm_mac(key, cmd.data)

    def _authenticate_card(self, cmd: CommandApdu) -> bytes:
        """Card authentication before cardholder verification (as EMV's): the terminal
        sends nothing secret to a card that cannot answer. No PIN needed, by design; the
        answer reveals nothing the terminal does not already know (serial and holder id are
        in the FCI) and the key stays write-only."""
        if not MIN_CARD_AUTH_CHALLENGE <= len(cmd.data) <= MAX_AUTH_CHALLENGE:
            raise CardError(SW.WRONG_LENGTH)
        self._require_lifecycle(Lifecycle.OPERATIONAL)
        key, holder = self.state.card_auth_key, self.state.holder_id
        if key is None:  # a card personalised before this key existed
            raise CardError(SW.REFERENCED_DATA_NOT_FOUND)
        assert holder is not None
        return keys.card_auth_mac(key, self.state.serial, holder, cmd.data)

    @command(Ins.EXTERNAL_AUTHENTICATE)
    def external_authenticate(self, cmd: CommandApdu) -> bytes:
        self._require_p1p2(cmd, 0, 0)
        if len(cmd.data) != keys.CONFIRM_SIZE:
            raise CardError(SW.WRONG_LENGTH)
        self._require_lifecycle(Lifecycle.OPERATIONAL)
        peer = self._require_peer()
        challenge, self.v.challenge = self.v.challenge, None  # single use, pass or fail
        if challenge is None:
            raise CardError(SW.CONDITIONS_NOT_SATISFIED)
        assert self.state.holder_id is not None
        key = keys.confirm_key(peer.pair_key, peer.identifier, self.state.holder_id)
        if not hmac.compare_digest(keys.confirm_mac(key, challenge), cmd.data):
            peer.authenticated = False
            raise CardError(SW.AUTHENTICATION_FAILED)
        peer.authenticated = True
        return b""

    @command(Ins.GENERAL_AUTHENTICATE_BER)
    def general_authenticate(self, cmd: CommandApdu) -> bytes:
        """A session handshake with the peer (docs/apdu.md 3.20): this card's proof over both
        nonces and, only once the peer's proof over them checked, the two session keys.
        Stateless, so a server answering a stranger's handshake holds no card session while
        the stranger takes its time; the pair key and the row stay here."""
        self._require_p1p2(cmd, 0, KeyReference.PEER)
        try:
            items = parse_unique(cmd.data, _DYNAMIC_AUTH)
            fields = parse_unique(items[TAG_DYNAMIC_AUTH], _HANDSHAKE_FIELDS)
            role = fields[TAG_SESSION_ROLE]
            initiator, responder = fields[TAG_INITIATOR_NONCE], fields[TAG_RESPONDER_NONCE]
        except (TlvError, KeyError) as exc:
            raise CardError(SW.WRONG_DATA) from exc
        ours = role[0] if len(role) == 1 else None
        if ours not in (keys.SESSION_INITIATOR, keys.SESSION_RESPONDER) \
                or len(initiator) != keys.SESSION_NONCE_SIZE \
                or len(responder) != keys.SESSION_NONCE_SIZE:
            raise CardError(SW.WRONG_DATA)
        self._require_pin()
        peer = self._require_peer()
        own = self.state.holder_id
        assert own is not None and ours is not None
        theirs = keys.SESSION_INITIATOR + keys.SESSION_RESPONDER - ours
        proof = keys.session_proof(keys.session_proof_key(peer.pair_key, own, peer.identifier),
                                   ours, initiator, responder)
        answer = tlv(TAG_OWN_PROOF, proof)
        if TAG_PEER_PROOF in fields:
            expected = keys.session_proof(
                keys.session_proof_key(peer.pair_key, peer.identifier, own), theirs,
                initiator, responder)
            if not hmac.compare_digest(expected, fields[TAG_PEER_PROOF]):
                raise CardError(SW.AUTHENTICATION_FAILED)
            answer += tlv(TAG_SEND_KEY, keys.session_frame_key(
                peer.pair_key, own, peer.identifier, initiator, responder))
            answer += tlv(TAG_RECEIVE_KEY, keys.session_frame_key(
                peer.pair_key, peer.identifier, own, initiator, responder))
        return tlv(TAG_DYNAMIC_AUTH, answer)

    # -- personalisation (CLA 80) -----------------------------------------------------------

    @command(Ins.INITIALIZE_UPDATE)
    def initialize_update(self, cmd: CommandApdu) -> bytes:
        self._require_p1p2(cmd, 0, 0)
        if len(cmd.data) != 8:
            raise CardError(SW.WRONG_LENGTH)
        self._require_lifecycle(Lifecycle.PERSONALISATION)
        card_challenge = secrets.token_bytes(8)
        session = keys.perso_session_key(self.state.transport_key, cmd.data, card_challenge)
        self.v.perso = PersoSession(session)
        return (self.state.serial + card_challenge
                + keys.card_cryptogram(session, cmd.data, card_challenge))

    def _check_command_mac(self, cmd: CommandApdu) -> bytes:
        """Strip and check the C-MAC; a bad MAC ends the session (as GlobalPlatform SCP)."""
        self._require_lifecycle(Lifecycle.PERSONALISATION)
        session = self.v.perso
        if session is None:
            raise CardError(SW.SECURITY_STATUS_NOT_SATISFIED)
        if len(cmd.data) < keys.MAC_SIZE:
            raise CardError(SW.WRONG_LENGTH)
        payload, mac = cmd.data[: -keys.MAC_SIZE], cmd.data[-keys.MAC_SIZE :]
        header = bytes((cmd.cla & ~0x10 & 0xFF, cmd.ins, cmd.p1, cmd.p2))
        expected = keys.command_mac(session.key, session.counter + 1, header, payload)
        if not hmac.compare_digest(expected, mac):
            self.v.perso = None
            raise CardError(SW.SECURITY_STATUS_NOT_SATISFIED)
        session.counter += 1
        return payload

    @command(Ins.STORE_DATA)
    def store_data(self, cmd: CommandApdu) -> bytes:
        self._require_p1p2(cmd, 0, 0)
        payload = self._check_command_mac(cmd)
        try:
            (tag, value), = parse_unique(payload, set(PersoObject)).items()
        except (TlvError, ValueError) as exc:
            raise CardError(SW.WRONG_DATA) from exc
        salt = self.state.pin_salt
        if tag == PersoObject.HOLDER_ID:
            try:
                blom.identifier_bytes(value)
            except blom.IdentifierError as exc:
                raise CardError(SW.WRONG_DATA) from exc
            new = self.state.with_(holder_id=value)
        elif tag == PersoObject.ROW:
            try:
                k = len(blom.row_from_bytes(value))
            except ValueError as exc:
                raise CardError(SW.WRONG_DATA) from exc
            if k > MAX_K:
                raise CardError(SW.WRONG_DATA)
            new = self.state.with_(row=value)
        elif tag == PersoObject.CARD_AUTH_KEY:
            if len(value) != keys.CARD_AUTH_KEY_SIZE:
                raise CardError(SW.WRONG_DATA)
            new = self.state.with_(card_auth_key=value)
        else:
            if not is_valid_pin_block(value):
                raise CardError(SW.WRONG_DATA)
            field_name = "pin_hash" if tag == PersoObject.PIN else "puk_hash"
            new = self.state.with_(**{field_name: pin.pin_hash(salt, value)})
        self._commit(new)
        return b""

    @command(Ins.SET_STATUS)
    def set_status(self, cmd: CommandApdu) -> bytes:
        self._require_p1p2(cmd, 0x00, Lifecycle.OPERATIONAL)
        payload = self._check_command_mac(cmd)
        if payload:
            raise CardError(SW.WRONG_LENGTH)
        s = self.state
        if None in (s.holder_id, s.row, s.pin_hash, s.puk_hash, s.card_auth_key):
            raise CardError(SW.CONDITIONS_NOT_SATISFIED)
        self._commit(s.with_(lifecycle=Lifecycle.OPERATIONAL, pin_tries=PIN_MAX_TRIES,
                             puk_tries=PUK_MAX_TRIES, atc_reserved=0))
        self.atc = 0
        self.v.perso = None
        return b""
