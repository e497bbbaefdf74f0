"""Encryption of the card's state at rest, as swtpm offers for a software TPM's state.

A sealed state file is

    magic "NXSS" | version 01 | suite 01 | salt (16) | nonce (12) | ciphertext | tag (16)

suite 01: key = HKDF-SHA256(ikm = the user's state key, salt, info = INFO, 32 bytes),
AES-256-GCM over the state's JSON text, the 34-byte header as associated data (so the
version, suite, salt and nonce cannot be changed without the tag failing). Salt and nonce are
fresh for every write. A plain (unsealed) state file is the JSON text itself and begins with
"{", never with the magic.

The state key is whatever the user keeps in a file or hands over on a file descriptor: at
least 16 random bytes (32 recommended). It is not a password: HKDF does not slow guessing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from Crypto.Cipher import AES

from card_applet.kdf import hkdf_sha256
from card_applet.store_errors import StateFormatError, StateKeyError

MAGIC = b"NXSS"
VERSION = 1
SUITE_HKDF_SHA256_AES256GCM = 1
SALT_SIZE, NONCE_SIZE, TAG_SIZE = 16, 12, 16
HEADER_SIZE = len(MAGIC) + 2 + SALT_SIZE + NONCE_SIZE
INFO = b"nettx card state v1 AES-256-GCM"
MIN_KEY, MAX_KEY = 16, 4096


@dataclass(frozen=True, repr=False)
class StateKey:
    """The user's state key (input keying material, never used directly as the AES key)."""

    material: bytes

    def __post_init__(self) -> None:
        if not MIN_KEY <= len(self.material) <= MAX_KEY:
            raise StateKeyError(f"a state key has {MIN_KEY} to {MAX_KEY} bytes, this one "
                                f"{len(self.material)} (make one: head -c 32 /dev/urandom)")

    def __repr__(self) -> str:  # never print the key
        return "StateKey(...)"

    @classmethod
    def parse(cls, raw: bytes) -> StateKey:
        # one trailing newline is an editor's, not the key's
        if raw.endswith(b"\r\n"):
            raw = raw[:-2]
        elif raw.endswith(b"\n"):
            raw = raw[:-1]
        return cls(raw)

    @classmethod
    def from_file(cls, path: Path) -> StateKey:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StateKeyError(f"cannot read the state key file {path}: "
                                f"{exc.strerror or exc}") from exc
        return cls.parse(raw)

    @classmethod
    def from_fd(cls, fd: int) -> StateKey:
        """Read the key from `fd` to end of file (a pipe or a file), then close it."""
        chunks = []
        size = 0
        try:
            while chunk := os.read(fd, 4096):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_KEY + 2:
                    break
        except OSError as exc:
            raise StateKeyError(f"cannot read the state key from fd {fd}: "
                                f"{exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        return cls.parse(b"".join(chunks))

    def aes_key(self, salt: bytes) -> bytes:
        return hkdf_sha256(self.material, salt, INFO)


def is_sealed(raw: bytes) -> bool:
    return raw.startswith(MAGIC)


def seal(key: StateKey, plaintext: bytes) -> bytes:
    salt, nonce = secrets.token_bytes(SALT_SIZE), secrets.token_bytes(NONCE_SIZE)
    header = MAGIC + bytes((VERSION, SUITE_HKDF_SHA256_AES256GCM)) + salt + nonce
    cipher = AES.new(key.aes_key(salt), AES.MODE_GCM, nonce=nonce, mac_len=TAG_SIZE)
    cipher.update(header)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return header + ciphertext + tag


def unseal(key: StateKey, raw: bytes, where: str = "state file") -> bytes:
    if len(raw) < HEADER_SIZE + TAG_SIZE or not is_sealed(raw):
        raise StateFormatError(f"{where} is not a sealed card state (too short or no magic)")
    version, suite = raw[len(MAGIC)], raw[len(MAGIC) + 1]
    if version != VERSION or suite != SUITE_HKDF_SHA256_AES256GCM:
        raise StateFormatError(f"{where}: sealed state version {version} suite {suite} "
                               "is not supported")
    header, body = raw[:HEADER_SIZE], raw[HEADER_SIZE:]
    salt = header[len(MAGIC) + 2 : len(MAGIC) + 2 + SALT_SIZE]
    nonce = header[len(MAGIC) + 2 + SALT_SIZE :]
    cipher = AES.new(key.aes_key(salt), AES.MODE_GCM, nonce=nonce, mac_len=TAG_SIZE)
    cipher.update(header)
    try:
        return cipher.decrypt_and_verify(body[:-TAG_SIZE], body[-TAG_SIZE:])
    except ValueError:
        raise StateKeyError(f"wrong state key for {where} (or the file was altered)") from None
