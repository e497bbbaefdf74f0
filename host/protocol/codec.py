"""Deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding, via cbor2's canonical mode)
for everything that is hashed, MACed or used as associated data, and strict field access for
everything decoded from a peer.

A decoded message is untrusted: `Fields` turns each missing key, wrong type or out-of-range
size into a `WireError` naming the field, so no handler ever meets a KeyError or a str where it
expected bytes."""

from __future__ import annotations

from typing import Any, TypeVar

import cbor2

from host.errors import WireError

T = TypeVar("T")


def encode(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


MAX_DEPTH = 16
INT_RANGE = range(-(2**63), 2**63)  # what SQLite and every peer can hold
_LEAVES = frozenset({str, bytes, bool, type(None)})  # exactly these types: nothing to walk


def decode(data: bytes, what: str = "message") -> Any:
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises a zoo of types on hostile input
        raise WireError(f"{what} is not valid CBOR ({type(exc).__name__})") from exc
    check_plain(value, what)
    return value


def check_plain(value: Any, what: str, depth: int = 0) -> None:
    """Only the data model the protocol uses: maps with text keys, arrays, text, bytes,
    64-bit integers, booleans and null. cbor2 would also hand over tagged values (dates,
    decimals, sets, and shared references that build cyclic structures); none of them
    belongs in a message, and a cycle would never re-encode."""
    if depth > MAX_DEPTH:
        raise WireError(f"{what} is nested deeper than {MAX_DEPTH} levels")
    if type(value) in _LEAVES:  # most of a message, settled by one lookup
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise WireError(f"{what} has a map key that is not text")
            check_plain(item, what, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_plain(item, what, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        if value not in INT_RANGE:
            raise WireError(f"{what} has an integer outside 64 bits")
    elif not isinstance(value, (str, bytes, bool)) and value is not None:
        raise WireError(f"{what} has a value of type {type(value).__name__}, not plain CBOR")


class Fields:
    """Typed, bounded access to a decoded CBOR map."""

    def __init__(self, value: Any, what: str) -> None:
        if not isinstance(value, dict):
            raise WireError(f"{what} must be a map, got {type(value).__name__}")
        self.map = value
        self.what = what

    def get(self, key: str, kind: type[T], *, min_size: int = 0, max_size: int | None = None,
            optional: bool = False) -> T:
        if key not in self.map:
            if optional:
                return None  # type: ignore[return-value]
            raise WireError(f"{self.what}: missing field {key!r}")
        value = self.map[key]
        # bool is an int in Python; a peer sending true for a count is still wrong
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise WireError(f"{self.what}: field {key!r} must be {kind.__name__}, "
                            f"got {type(value).__name__}")
        sized = isinstance(value, (bytes, str, list, dict))
        if sized and (len(value) < min_size or (max_size is not None and len(value) > max_size)):
            raise WireError(f"{self.what}: field {key!r} has size {len(value)}, "
                                f"expected {min_size}..{max_size}")
        return value

    def sub(self, key: str) -> Fields:
        return Fields(self.get(key, dict), f"{self.what}.{key}")
