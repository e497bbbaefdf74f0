"""ISO/IEC 7816-4 status words, and the one exception the applet raises."""

from __future__ import annotations

from enum import IntEnum


class SW(IntEnum):
    OK = 0x9000
    BYTES_REMAINING = 0x6100  # 61xx: xx more bytes for GET RESPONSE
    END_OF_FILE = 0x6282  # warning: fewer than Ne bytes were left to read
    AUTHENTICATION_FAILED = 0x6300
    VERIFY_FAILED = 0x63C0  # 63Cx: x tries left
    MEMORY_FAILURE = 0x6581
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    LAST_COMMAND_EXPECTED = 0x6883
    INCOMPATIBLE_FILE_STRUCTURE = 0x6981
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    CONDITIONS_NOT_SATISFIED = 0x6985
    NO_CURRENT_EF = 0x6986
    INCORRECT_SM_DATA = 0x6988
    WRONG_DATA = 0x6A80
    FILE_NOT_FOUND = 0x6A82
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    LC_INCONSISTENT = 0x6A87
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    WRONG_P1P2 = 0x6B00
    WRONG_LE = 0x6C00  # 6Cxx: re-issue with Le = xx
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    UNKNOWN = 0x6F00


_MEANINGS: dict[int, str] = {
    SW.OK: "success",
    SW.END_OF_FILE: "end of file reached before reading Ne bytes",
    SW.AUTHENTICATION_FAILED: "authentication failed",
    SW.MEMORY_FAILURE: "memory failure (persistent write failed)",
    SW.WRONG_LENGTH: "wrong length",
    SW.LOGICAL_CHANNEL_NOT_SUPPORTED: "logical channel not supported",
    SW.SECURE_MESSAGING_NOT_SUPPORTED: "secure messaging not supported",
    SW.LAST_COMMAND_EXPECTED: "last command of the chain expected",
    SW.INCOMPATIBLE_FILE_STRUCTURE: "command incompatible with file structure",
    SW.SECURITY_STATUS_NOT_SATISFIED: "security status not satisfied",
    SW.AUTH_METHOD_BLOCKED: "authentication method blocked",
    SW.CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    SW.NO_CURRENT_EF: "command not allowed (no current EF)",
    SW.INCORRECT_SM_DATA: "integrity check failed (authentication tag or MAC)",
    SW.WRONG_DATA: "incorrect parameters in the data field",
    SW.FILE_NOT_FOUND: "file or application not found",
    SW.NOT_ENOUGH_MEMORY: "not enough memory",
    SW.INCORRECT_P1P2: "incorrect parameters P1-P2",
    SW.LC_INCONSISTENT: "Nc inconsistent with parameters P1-P2",
    SW.REFERENCED_DATA_NOT_FOUND: "referenced data not found",
    SW.WRONG_P1P2: "wrong parameters P1-P2",
    SW.INS_NOT_SUPPORTED: "instruction not supported",
    SW.CLA_NOT_SUPPORTED: "class not supported",
    SW.UNKNOWN: "no precise diagnosis",
}


def describe(sw: int) -> str:
    """Human meaning of any status word, including the parameterised 61xx, 63Cx and 6Cxx."""
    if sw in _MEANINGS:
        return _MEANINGS[sw]
    hi, lo = sw >> 8, sw & 0xFF
    if hi == 0x61:
        return f"{lo or 256} more bytes available (GET RESPONSE)"
    if hi == 0x6C:
        return f"wrong Le: re-issue with Le = {lo or 256}"
    if hi == 0x63 and lo & 0xF0 == 0xC0:
        return f"verification failed, {tries(lo & 0x0F)} left"
    return "unknown status"


def tries(n: int) -> str:
    """'1 try', '2 tries': the count the 63Cx status word carries, in English."""
    return f"{n} {'try' if n == 1 else 'tries'}"


def verify_failed(tries_left: int) -> int:
    return SW.VERIFY_FAILED | min(tries_left, 0x0F)


class CardError(Exception):
    """Raised by a command handler; the dispatcher renders it as the bare status word."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X} {describe(sw)}")
        self.sw = sw
