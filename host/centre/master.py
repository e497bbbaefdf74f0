"""The centre's master matrix D: its value, and its file.

D is a symmetric k x k matrix over GF(p); only the upper triangle is kept, packed row after
row (row i holds D[i][i..k-1]), each element 32 bytes big-endian. That is the master file's
body, so a command reads the master at disk speed and never holds k^2 Python integers.

The master file (HOME/authority/master.bin, mode 0600, written atomically):

    offset  size  field
    0       8     magic "NTXMASTR"
    8       2     format version, 1 (big-endian)
    10      2     k, 1..4096
    12      4     element count, k (k + 1) / 2
    16      32    SHA-256 of the body
    48      32 n  the body: the packed upper triangle, every element < p

A truncated, damaged or foreign file is refused with one line saying which. The vectors'
JSON format (master_upper_triangle_hex) is still read: `authority init --master FILE`
imports it, and a centre made before the binary file had it as master.json.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from card_applet import blom
from host.errors import AuthorityError

MAX_K = 4096
MAGIC = b"NTXMASTR"
VERSION = 1
HEADER = struct.Struct(">8sHHI32s")
SIZE = blom.ELEMENT_SIZE
# an element at or above p = 2^255 - 19 starts with these 31 bytes (and ends >= 0xED)
_NEAR_P = b"\x7f" + b"\xff" * 30
_TOP_BIT_CLEAR = bytes(b & 0x7F for b in range(256))


def elements(k: int) -> int:
    return k * (k + 1) // 2


def row_offsets(k: int) -> list[int]:
    """Index (in elements) of D[i][i] in the packed triangle, for each i."""
    return [i * k - i * (i - 1) // 2 for i in range(k)]


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise AuthorityError(f"k must be 1..{MAX_K}")


def _unreduced(packed: bytes | bytearray) -> int | None:
    """Index of the first element >= p, or None. Fast: a top bit set shows in the first
    byte, and the only other values >= p start with 7F FF .. FF (31 bytes)."""
    if max(packed[0::SIZE], default=0) >= 0x80:
        return next(i for i, b in enumerate(packed[0::SIZE]) if b >= 0x80)
    at = packed.find(_NEAR_P)
    while at != -1:
        if at % SIZE == 0 and packed[at + SIZE - 1] >= 0xED:
            return at // SIZE
        at = packed.find(_NEAR_P, at + 1)
    return None


@dataclass(frozen=True)
class Master:
    k: int
    packed: bytes = field(repr=False)  # the upper triangle, row after row, 32 bytes each

    def __post_init__(self) -> None:
        _check_k(self.k)
        if len(self.packed) != elements(self.k) * SIZE:
            raise AuthorityError("master body is not a k x k upper triangle")

    @classmethod
    def generate(cls, k: int) -> Master:
        _check_k(k)
        raw = bytearray(secrets.token_bytes(elements(k) * SIZE))
        raw[0::SIZE] = raw[0::SIZE].translate(_TOP_BIT_CLEAR)  # uniform below 2^255
        while (bad := _unreduced(raw)) is not None:  # below p: redraw (chance 2^-250)
            raw[bad * SIZE : (bad + 1) * SIZE] = blom.element_to_bytes(
                secrets.randbelow(blom.P))
        return cls(k, bytes(raw))

    @classmethod
    def from_upper(cls, upper: Sequence[Sequence[int]]) -> Master:
        """From the triangle as lists of integers: upper[i] = D[i][i..k-1]."""
        k = len(upper)
        _check_k(k)
        if any(len(row) != k - i for i, row in enumerate(upper)):
            raise AuthorityError("not an upper triangle")
        if any(not 0 <= v < blom.P for row in upper for v in row):
            raise AuthorityError("master elements out of range")
        return cls(k, b"".join(blom.element_to_bytes(v) for row in upper for v in row))

    # -- values -----------------------------------------------------------------------------

    def element(self, index: int) -> int:
        return int.from_bytes(self.packed[index * SIZE : (index + 1) * SIZE], "big")

    def entry(self, i: int, j: int) -> int:
        if j < i:
            i, j = j, i
        return self.element(i * self.k - i * (i - 1) // 2 + j - i)

    @property
    def upper(self) -> list[list[int]]:
        offsets = row_offsets(self.k)
        return [[self.element(o + n) for n in range(self.k - i)]
                for i, o in enumerate(offsets)]

    def matrix(self) -> list[list[int]]:
        return [[self.entry(i, j) for j in range(self.k)] for i in range(self.k)]

    # -- the vectors' JSON format -----------------------------------------------------------

    @classmethod
    def from_json(cls, doc: object) -> Master:
        if not isinstance(doc, dict):
            raise AuthorityError(f"not a master file: expected a JSON object, found "
                                 f"{type(doc).__name__}")
        rows = doc.get("master_upper_triangle_hex")
        if not isinstance(rows, list) or not all(
                isinstance(row, list) and all(isinstance(h, str) for h in row) for row in rows):
            raise AuthorityError("not a master file: master_upper_triangle_hex must be a list "
                                 "of lists of hex strings")
        k = len(rows)
        if k == 0 or any(len(row) != k - i for i, row in enumerate(rows)):
            raise AuthorityError("master_upper_triangle_hex is not an upper triangle")
        if k > MAX_K:
            raise AuthorityError(f"master k must be 1..{MAX_K}")
        if doc.get("k", k) != k:
            raise AuthorityError("master k does not match its triangle")
        try:  # each element as exactly 64 hex digits, then all of them in one conversion
            packed = bytes.fromhex("".join(h.rjust(2 * SIZE, "0") if len(h) <= 2 * SIZE
                                           else "x" for row in rows for h in row))
        except ValueError as exc:
            raise AuthorityError(f"not a master file: an element is not hex of at most "
                                 f"{2 * SIZE} digits ({exc})") from exc
        if len(packed) != elements(k) * SIZE or _unreduced(packed) is not None:
            raise AuthorityError("master elements out of range (each must be < p)")
        return cls(k, packed)

    def to_json(self) -> dict:
        hexed = self.packed.hex()
        step = 2 * SIZE
        return {"format": 1, "k": self.k, "field_prime": hex(blom.P),
                "master_upper_triangle_hex": [
                    [hexed[(o + n) * step : (o + n + 1) * step] for n in range(self.k - i)]
                    for i, o in enumerate(row_offsets(self.k))]}

    # -- the binary file --------------------------------------------------------------------

    def header(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.k, elements(self.k),
                           hashlib.sha256(self.packed).digest())

    @classmethod
    def read(cls, path: Path) -> Master:
        """The master in `path`: the binary file, or (by its first byte) the JSON format.
        AuthorityError, one line, if it is neither or is damaged."""
        try:
            with open(path, "rb", buffering=0) as f:
                head = f.read(HEADER.size)
                if not head.startswith(MAGIC):
                    return cls._read_json(path, head + f.read())
                if len(head) < HEADER.size:
                    raise AuthorityError(f"{path}: truncated master file (header cut short)")
                _magic, version, k, count, digest = HEADER.unpack(head)
                if version != VERSION:
                    raise AuthorityError(f"{path}: master file version {version}, this "
                                         f"nettx reads version {VERSION}")
                if not 1 <= k <= MAX_K or count != elements(k):
                    raise AuthorityError(f"{path}: not a master file (k = {k}, "
                                         f"{count} elements)")
                body = f.read(count * SIZE)  # one allocation, read straight into it
                extra = f.read(1)
        except OSError as exc:
            raise AuthorityError(f"{path}: cannot read a master file "
                                 f"({exc.strerror or exc})") from exc
        if len(body) != count * SIZE:
            raise AuthorityError(f"{path}: truncated master file ({HEADER.size + len(body)} "
                                 f"bytes, expected {HEADER.size + count * SIZE})")
        if extra:
            raise AuthorityError(f"{path}: not a master file (bytes after the body)")
        if hashlib.sha256(body).digest() != digest:
            raise AuthorityError(f"{path}: damaged master file (checksum mismatch)")
        if _unreduced(body) is not None:
            raise AuthorityError(f"{path}: not a master file (an element is not below p)")
        return cls(k, body)

    @classmethod
    def _read_json(cls, path: Path, raw: bytes) -> Master:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise AuthorityError(f"{path}: not a master file (neither nettx's binary master "
                                 f"nor JSON: {exc})") from exc
        try:
            return cls.from_json(doc)
        except AuthorityError as exc:
            raise AuthorityError(f"{path}: {exc}") from exc

    # from_file: the old name, for importers of the vectors' format
    from_file = read
