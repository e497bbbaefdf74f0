"""PIN and PUK blocks: 4..8 ASCII digits right-padded with 0xFF to 8 bytes (as PIV does),
stored on the card only as a salted HMAC."""

from __future__ import annotations

import hashlib
import hmac

BLOCK_SIZE = 8
MIN_DIGITS = 4


def encode_pin(pin: str) -> bytes:
    if not (MIN_DIGITS <= len(pin) <= BLOCK_SIZE and pin.isascii() and pin.isdigit()):
        raise ValueError(f"a PIN or PUK is {MIN_DIGITS}..{BLOCK_SIZE} digits")
    return pin.encode("ascii").ljust(BLOCK_SIZE, b"\xff")


def is_valid_block(block: bytes) -> bool:
    if len(block) != BLOCK_SIZE:
        return False
    digits = block.rstrip(b"\xff")
    return len(digits) >= MIN_DIGITS and all(0x30 <= b <= 0x39 for b in digits)


def pin_hash(salt: bytes, block: bytes) -> bytes:
    return hmac.new(salt, block, hashlib.sha256).digest()


def matches(salt: bytes, block: bytes, stored: bytes) -> bool:
    return hmac.compare_digest(pin_hash(salt, block), stored)
