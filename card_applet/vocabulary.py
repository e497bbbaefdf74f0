"""The card's vocabulary: every number the card and its terminals agree on, defined once.

The applet, the terminal (session, traces, conformance profile, APDU scripts) and the centre's
personalisation all read these names from here, never from the implementation modules. What
each value means is docs/apdu.md (section numbers below); the implementation that acts on it is
card_applet/applet.py.

Adding an instruction is one line in `Ins`: its name is how traces and errors name it, and
`SECRET` marks a command whose data (and its response's) the traces redact.
"""

from __future__ import annotations

from enum import IntEnum

# -- application (docs/apdu.md 1.1) -------------------------------------------------------------

AID = bytes.fromhex("F0") + b"EP0791901"
PIN_REFERENCE = 0x81  # ISO 7816-4 P2 of VERIFY & co: specific reference data, qualifier 1

# -- class byte (docs/apdu.md 1.4) ------------------------------------------------------------

CLA_PROPRIETARY = 0x80  # personalisation (GlobalPlatform-style)


def is_proprietary(cla: int) -> bool:
    """ISO 7816-4 5.4.1: b8 set is a proprietary class, where INS numbers mean what the
    card says, not what ISO says (80 20 is not VERIFY, 80 C0 is not GET RESPONSE)."""
    return bool(cla & 0x80)


# -- instructions (docs/apdu.md 2, 10) --------------------------------------------------------

SECRET = "secret"  # the command's data, and its response's, never reach a trace or a report
PROPRIETARY = "proprietary"  # only in a proprietary class (CLA 8x)


class Ins(IntEnum):
    """INS bytes, each with what a trace needs to know of it: `title` (how it is named),
    `secret` (docs/apdu.md 10: PIN and PUK blocks, order plaintext, challenges and
    cryptograms under card keys, personalisation objects) and `proprietary`."""

    secret: bool
    proprietary: bool

    def __new__(cls, value: int, *flags: str) -> Ins:
        member = int.__new__(cls, value)
        member._value_ = value
        member.secret = SECRET in flags
        member.proprietary = PROPRIETARY in flags
        return member

    # inter-industry (ISO/IEC 7816-4 and -8)
    SELECT = 0xA4
    GET_DATA = 0xCA
    VERIFY = 0x20, SECRET
    CHANGE_REFERENCE_DATA = 0x24, SECRET
    RESET_RETRY_COUNTER = 0x2C, SECRET
    MANAGE_SECURITY_ENVIRONMENT = 0x22
    PERFORM_SECURITY_OPERATION = 0x2A, SECRET  # ENCIPHER's input, DECIPHER's output
    GET_CHALLENGE = 0x84
    INTERNAL_AUTHENTICATE = 0x88, SECRET
    EXTERNAL_AUTHENTICATE = 0x82, SECRET
    GET_RESPONSE = 0xC0  # as secret as the answer it continues (card_applet/secrecy.py)
    READ_BINARY = 0xB0  # the card's public files (card_applet/files.py)
    # odd INS, BER-TLV data field: a party's session handshake (3.20)
    GENERAL_AUTHENTICATE_BER = 0x87, SECRET
    # not implemented by this card (6D00), named so that a trace of another card redacts it
    GENERAL_AUTHENTICATE = 0x86, SECRET
    # proprietary (CLA 80), personalisation only
    INITIALIZE_UPDATE = 0x50, PROPRIETARY, SECRET
    STORE_DATA = 0xE2, PROPRIETARY, SECRET
    SET_STATUS = 0xF0, PROPRIETARY, SECRET

    @property
    def title(self) -> str:
        return self.name.replace("_", " ")


def instruction(cla: int, ins: int) -> Ins | None:
    """The instruction a command's CLA and INS name, or None for one this vocabulary does
    not know in that class."""
    try:
        known = Ins(ins)
    except ValueError:
        return None
    return known if known.proprietary == is_proprietary(cla) else None


def command_name(cla: int, ins: int) -> str:
    known = instruction(cla, ins)
    return known.title if known is not None else f"INS {ins:02X}"


# what is_secret_command answers, by (proprietary class, INS): traces ask on every exchange
_SECRET_COMMANDS = frozenset((known.proprietary, known.value) for known in Ins if known.secret)


def is_secret_command(cla: int, ins: int) -> bool:
    """Whether a command's data, and its response's, are secret (docs/apdu.md 10)."""
    return (is_proprietary(cla), ins) in _SECRET_COMMANDS


class KeyReference(IntEnum):
    """INTERNAL AUTHENTICATE P2 (ISO 7816-4 7.5.2: b8 = 1 specific, b5-b1 key number)."""

    PEER = 0x00  # no reference given: the pair key of the peer set by MSE (claim 7)
    CARD_AUTH = 0x81  # the card authentication key written at personalisation


# -- data objects (docs/apdu.md 4) ------------------------------------------------------------


class DataObject(IntEnum):
    """GET DATA tags (P1-P2) and FCI proprietary tags (4.1)."""

    ALL = 0x00C0
    HOLDER_ID = 0x00C1
    SERIAL = 0x00C2
    TRIES = 0x00C3
    SCHEME = 0x00C4
    LIFECYCLE = 0x00C5
    ATC = 0x00C6
    VERSION = 0x00C7


# -- the transaction counter (docs/apdu.md 3.7, 7.6) ------------------------------------------

ATC_MAX = 0xFFFF_FFFF  # the last value a box carries (4 bytes); past it, ENCIPHER is refused
# Counter values are reserved in EEPROM this many at a time: one commit per ATC_BLOCK
# ENCIPHERs (0.85 ms spread over 32 boxes: under 30 us each), and at most ATC_BLOCK - 1
# values skipped by a reset or a kill (2^32 values last 134 million card sessions even
# when every session seals one box). The card manager tolerates counters that arrive out
# of order ATC_WINDOW = 8 blocks below the highest (host/parties/authorisation.py), so an
# order overtaken by orders sealed across up to 7 card restarts is not taken for a clone.
ATC_BLOCK = 32


class SchemeTag(IntEnum):
    """Inside DataObject.SCHEME (4.1)."""

    VERSION = 0x80
    PRIME = 0x81
    K = 0x82


class Fci(IntEnum):
    """The SELECT response (4.2): the proprietary template holds GET DATA C0's content."""

    TEMPLATE = 0x6F
    DF_NAME = 0x84
    PROPRIETARY = 0xA5


class PersoObject(IntEnum):
    """STORE DATA tags: write-only personalisation objects (4.5)."""

    HOLDER_ID = 0xDF10
    ROW = 0xDF11
    PIN = 0xDF12
    PUK = 0xDF13
    CARD_AUTH_KEY = 0xDF14


class Pso(IntEnum):
    """PERFORM SECURITY OPERATION P1-P2 (ISO 7816-8)."""

    ENCIPHER = 0x8680  # output: cryptogram; input: plain value
    DECIPHER = 0x8086  # output: plain value; input: cryptogram


# PSO data objects (4.3)
TAG_PLAIN = 0x80
TAG_AAD = 0x81
TAG_CONTEXT = 0x82
TAG_CRYPTOGRAM = 0x86

# MANAGE SECURITY ENVIRONMENT (3.6, 4.4)
TAG_KEY_REFERENCE = 0x83  # the peer identifier
MSE_SET_P1 = frozenset({0x41, 0x81, 0xC1, 0xF1})  # SET, for any of the operations
MSE_SET_INTERNAL = 0x41  # SET for computation, decipherment, internal authentication
MSE_TEMPLATES = frozenset({0xA4, 0xB8})  # control reference templates AT and CT
MSE_TEMPLATE_AT = 0xA4

# GENERAL AUTHENTICATE (3.20, 4.9): a session handshake between two parties
TAG_DYNAMIC_AUTH = 0x7C  # the template around the data field and the response
TAG_SESSION_ROLE = 0x80  # 01: this card initiated the session, 02: it responds
TAG_INITIATOR_NONCE = 0x81
TAG_RESPONDER_NONCE = 0x82
TAG_PEER_PROOF = 0x83  # the peer's proof, checked before any session key is given out
TAG_OWN_PROOF = 0x84
TAG_SEND_KEY = 0x85  # this card -> peer
TAG_RECEIVE_KEY = 0x86  # peer -> this card


# -- files (docs/apdu.md 3.17-3.19, 4.7): the MF, its EFs, SELECT's P1/P2, FCP and EF.DIR --

MF_ID = 0x3F00
class FileId(IntEnum):
    EF_DIR = 0x2F00
    EF_ATR = 0x2F01
    EF_AODF = 0x4401
    EF_ODF = 0x5031
    EF_TOKEN_INFO = 0x5032


class SelectBy(IntEnum):
    """SELECT P1 (ISO 7816-4 7.1.1 table 39)."""

    FILE_ID = 0x00  # MF, DF or EF by identifier; no data: the MF
    CHILD_DF = 0x01
    EF_UNDER_CURRENT = 0x02
    PARENT_DF = 0x03
    DF_NAME = 0x04  # the application, handled by the applet itself
    PATH_FROM_MF = 0x08
    PATH_FROM_CURRENT = 0x09


class Answer(IntEnum):
    """SELECT P2 b4-b3: what the card returns (ISO 7816-4 7.1.1 table 40)."""

    FCI = 0x00
    FCP = 0x04
    NOTHING = 0x0C


# FCP data objects (ISO 7816-4 5.3.3 table 12)
TAG_FCI = 0x6F
TAG_FCP = 0x62
TAG_SIZE = 0x80  # number of data bytes in a transparent EF
TAG_DESCRIPTOR = 0x82
TAG_FILE_ID = 0x83
TAG_DF_NAME = 0x84
TAG_SFI = 0x88
TAG_LIFE_CYCLE = 0x8A
DESCRIPTOR_TRANSPARENT_EF = 0x01  # working EF, not shareable, transparent
DESCRIPTOR_DF = 0x38
LIFE_CYCLE_OPERATIONAL = 0x05  # operational, activated: the files never change

# EF.DIR (ISO 7816-4 8.2.1.1, table 11 "application template")
TAG_APPLICATION_TEMPLATE = 0x61
TAG_AID = 0x4F
TAG_APPLICATION_LABEL = 0x50
# EF.ATR/INFO (ISO 7816-4 8.2.1.1 and 12.7.1)
TAG_CARD_CAPABILITIES = 0x47
TAG_EXTENDED_LENGTH = 0x7F66


# -- life cycle (docs/apdu.md 1.3) ------------------------------------------------------------


class Lifecycle(IntEnum):
    """ISO/IEC 7816-4 table 13 life cycle status byte."""

    PERSONALISATION = 0x03  # "initialisation state": only personalisation commands
    OPERATIONAL = 0x05  # "operational state (activated)": locked for good


# -- PIN block (docs/apdu.md 4.6) -------------------------------------------------------------

PIN_BLOCK_SIZE = 8
PIN_MIN_DIGITS = 4


def encode_pin(pin: str) -> bytes:
    """A PIN or PUK of 4..8 ASCII digits, right-padded with 0xFF to 8 bytes (as PIV)."""
    if not (PIN_MIN_DIGITS <= len(pin) <= PIN_BLOCK_SIZE and pin.isascii() and pin.isdigit()):
        raise ValueError(f"a PIN or PUK is {PIN_MIN_DIGITS}..{PIN_BLOCK_SIZE} digits")
    return pin.encode("ascii").ljust(PIN_BLOCK_SIZE, b"\xff")


def is_valid_pin_block(block: bytes) -> bool:
    if len(block) != PIN_BLOCK_SIZE:
        return False
    digits = block.rstrip(b"\xff")
    return len(digits) >= PIN_MIN_DIGITS and all(0x30 <= b <= 0x39 for b in digits)
