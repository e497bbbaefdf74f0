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


#: what cbor2 encodes the same way whether or not it is asked for canonical output (its
#: canonical mode differs only in sorting map keys and sets and in shrinking floats)
_FLAT = frozenset({str, bytes, int, bool, type(None)})
_KEY_ORDERS: dict[tuple[str, ...], tuple[str, ...]] = {}  # a message's keys -> sorted


def encode_map(body: dict[str, Any]) -> bytes:
    """`encode(body)`, byte for byte, for a map with text keys (a message): when every value
    is text, bytes, an integer, a boolean or null, the map's keys are put in deterministic
    order here (by length, then bytewise: RFC 8949 §4.2.1 for text keys) and cbor2 encodes
    it as it stands, which costs a quarter of its canonical mode's sorting; any other value
    goes through `encode`."""
    for value in body.values():
        if type(value) not in _FLAT:
            return encode(body)
    keys = tuple(body)
    order = _KEY_ORDERS.get(keys)
    if order is None:
        if not all(type(key) is str for key in keys):
            return encode(body)
        order = tuple(sorted(keys, key=lambda key: (len(key.encode()), key.encode())))
        if len(_KEY_ORDERS) < 1024:  # the messages' few key sets; never a peer's
            _KEY_ORDERS[keys] = order
    if order != keys:
        body = {key: body[key] for key in order}
    return cbor2.dumps(body)


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
    if type(value) in _LEAVES:
        return
    _check_value(value, what, depth)


def _check_value(value: Any, what: str, depth: int) -> None:
    """`check_plain` of a value that is not a leaf, at `depth` (already within bounds).
    A container's leaves are settled in its own loop, one type lookup each: one call per
    container rather than per value (a message is mostly leaves), in the same order and
    with the same errors as a call per value."""
    if isinstance(value, dict):
        inner = depth + 1
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise WireError(f"{what} has a map key that is not text")
            if inner > MAX_DEPTH:
                raise WireError(f"{what} is nested deeper than {MAX_DEPTH} levels")
            if type(item) not in _LEAVES:
                _check_value(item, what, inner)
    elif isinstance(value, list):
        inner = depth + 1
        for item in value:
            if inner > MAX_DEPTH:
                raise WireError(f"{what} is nested deeper than {MAX_DEPTH} levels")
            if type(item) not in _LEAVES:
                _check_value(item, what, inner)
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
