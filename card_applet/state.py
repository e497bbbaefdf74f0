"""The card's state: persistent (its EEPROM) and volatile (RAM, lost on reset).

Persistent state is one frozen dataclass, replaced whole: a handler builds the new state and
commits it, so a command either happens completely or not at all. `FileStore` makes that
true on disk too (durable.write_atomic): a fresh temporary file created exclusively, every
byte written, fsync, rename over the old one, fsync the directory. A kill at any instant
leaves either the old file or the new one; a full disk or an I/O error raises OSError with
the old file in place, and the applet answers 6581 with its state unchanged.

`FileStore` also holds the card's lock (lockfile.py: one process per card) and, given a
`StateKey`, seals the file (sealing.py: AES-256-GCM at rest).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from card_applet import blom
from card_applet.durable import write_atomic
from card_applet.lockfile import StateLock
from card_applet.sealing import StateKey, is_sealed, seal, unseal
from card_applet.store_errors import StateFormatError, StateKeyError
from card_applet.vocabulary import ATC_MAX, Lifecycle

PIN_MAX_TRIES = 3
PUK_MAX_TRIES = 3
STATE_FORMAT = 2
# the transaction counter's key in each format this card reads. Format 1 (before counters
# were reserved in blocks) wrote `atc`, the value of the last box: every value up to it is
# spent, which is exactly what `atc_reserved` says, so it loads unchanged as the reservation
# and goes back to disk as format 2 at the next commit
_COUNTER_KEY = {1: "atc", STATE_FORMAT: "atc_reserved"}


@dataclass(frozen=True, slots=True)
class PersistentState:
    serial: bytes
    transport_key: bytes  # diversified from the centre's master transport key
    pin_salt: bytes
    lifecycle: Lifecycle = Lifecycle.PERSONALISATION
    holder_id: bytes | None = None
    row: bytes | None = None  # k * 32 bytes, write-only: no command reads it
    pin_hash: bytes | None = None
    puk_hash: bytes | None = None
    pin_tries: int = PIN_MAX_TRIES
    puk_tries: int = PUK_MAX_TRIES
    # the end of the transaction counter's reserved block: every value up to it may have been
    # used, and ENCIPHER uses no value above it before a new reservation is committed
    # (applet.py `_spend_counter`, docs/apdu.md 7.6)
    atc_reserved: int = 0
    card_auth_key: bytes | None = None  # 32 bytes, write-only: INTERNAL AUTHENTICATE key 81

    def with_(self, **changes: object) -> PersistentState:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def k(self) -> int:
        return len(self.row) // 32 if self.row else 0

    def to_json(self) -> str:
        raw = asdict(self)
        doc: dict[str, object] = {"format": STATE_FORMAT}
        for key, value in raw.items():
            doc[key] = value.hex() if isinstance(value, bytes) else value
        doc["lifecycle"] = int(self.lifecycle)
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str) -> PersistentState:
        """Parse and check every field's type and range: a state the applet could not run
        on is refused here (StateFormatError), never reached by a command."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise StateFormatError(f"not JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise StateFormatError(f"expected a JSON object, found {type(doc).__name__}")
        version = doc.get("format")
        # bool is an int in Python: true would read as format 1
        if not isinstance(version, int) or isinstance(version, bool) \
                or version not in _COUNTER_KEY:
            raise StateFormatError("unknown card state format")
        counter = _COUNTER_KEY[version]
        unknown = set(doc) - {"format", counter, *_FIELDS}
        if unknown:
            raise StateFormatError(f"unknown field {sorted(unknown)[0]!r}")
        kwargs: dict[str, object] = {}
        for name, (sizes, optional) in _BYTE_FIELDS.items():
            kwargs[name] = _hex_field(doc, name, sizes, optional)
        row = kwargs["row"]
        if isinstance(row, bytes) and (len(row) % 32 or len(row) > MAX_ROW_BYTES):
            raise StateFormatError(f"'row' must be a multiple of 32 bytes, at most "
                                   f"{MAX_ROW_BYTES}")
        lifecycle = _int_field(doc, "lifecycle", 0, 0xFF)
        try:
            kwargs["lifecycle"] = Lifecycle(lifecycle)
        except ValueError:
            raise StateFormatError(f"'lifecycle' {lifecycle} is not a life cycle this card "
                                   "knows") from None
        kwargs["pin_tries"] = _int_field(doc, "pin_tries", 0, PIN_MAX_TRIES)
        kwargs["puk_tries"] = _int_field(doc, "puk_tries", 0, PUK_MAX_TRIES)
        kwargs["atc_reserved"] = _int_field(doc, counter, 0, ATC_MAX)
        return cls(**kwargs)  # type: ignore[arg-type]


# what from_json accepts: byte fields as hex (lengths allowed, None allowed), integers in range
MAX_SERIAL_BYTES = 32
MAX_ROW_BYTES = 4096 * 32
_BYTE_FIELDS: dict[str, tuple[range, bool]] = {
    "serial": (range(1, MAX_SERIAL_BYTES + 1), False),
    "transport_key": (range(16, 65), False),
    "pin_salt": (range(1, 65), False),
    "holder_id": (range(1, blom.MAX_ID_BYTES + 1), True),
    "row": (range(32, MAX_ROW_BYTES + 1), True),
    "pin_hash": (range(32, 33), True),
    "puk_hash": (range(32, 33), True),
    "card_auth_key": (range(32, 33), True),
}
_FIELDS = {*_BYTE_FIELDS, "lifecycle", "pin_tries", "puk_tries"}  # and the counter's key


def _hex_field(doc: dict[str, object], name: str, sizes: range,
               optional: bool) -> bytes | None:
    value = doc.get(name)
    if value is None:
        if optional:
            return None
        raise StateFormatError(f"'{name}' is missing")
    if not isinstance(value, str):
        raise StateFormatError(f"'{name}' must be a hex string, found {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise StateFormatError(f"'{name}' is not hex") from None
    if len(raw) not in sizes:
        raise StateFormatError(f"'{name}' has {len(raw)} bytes, expected "
                               f"{sizes.start}..{sizes.stop - 1}")
    return raw


def _int_field(doc: dict[str, object], name: str, low: int, high: int) -> int:
    if name not in doc:
        raise StateFormatError(f"'{name}' is missing")
    value = doc[name]
    # bool is an int in Python: true would read as 1
    if not isinstance(value, int) or isinstance(value, bool):
        raise StateFormatError(f"'{name}' must be an integer, found {type(value).__name__}")
    if not low <= value <= high:
        raise StateFormatError(f"'{name}' is {value}, expected {low}..{high}")
    return value


def encode_state(state: PersistentState, key: StateKey | None) -> bytes:
    """The file's bytes: the JSON text, sealed when a key is given."""
    text = state.to_json().encode()
    return seal(key, text) if key is not None else text


def decode_state(raw: bytes, key: StateKey | None, where: str = "state file") -> PersistentState:
    if is_sealed(raw):
        if key is None:
            raise StateKeyError(f"{where} is sealed: give its state key "
                                "(--state-key-file or --state-key-fd)")
        raw = unseal(key, raw, where)
    elif key is not None:
        # strict: with a key, a plain file is refused, so nobody can swap a sealed card
        # for a plain one of their making (seal a plain card with `nettx card seal`)
        raise StateKeyError(f"{where} is not sealed, but a state key was given")
    try:
        return PersistentState.from_json(raw.decode())
    except UnicodeDecodeError:
        raise StateFormatError(f"{where} is not a card state: not UTF-8 text") from None
    except StateFormatError as exc:
        raise StateFormatError(f"{where} is not a card state: {exc}") from exc


def manufacture(transport_key: bytes, serial: bytes | None = None) -> PersistentState:
    """A blank card as it leaves the factory: serial and diversified transport key only."""
    return PersistentState(
        serial=serial if serial is not None else secrets.token_bytes(8),
        transport_key=transport_key,
        pin_salt=secrets.token_bytes(16),
    )


class CardStore(Protocol):
    def load(self) -> PersistentState: ...

    def commit(self, state: PersistentState) -> None: ...


@dataclass
class MemoryStore:
    state: PersistentState
    writes: int = 0

    def load(self) -> PersistentState:
        return self.state

    def commit(self, state: PersistentState) -> None:
        self.state = state
        self.writes += 1


def read_state(path: Path, key: StateKey | None = None) -> PersistentState:
    """The state on disk, for inspection only: no lock (a card process may be running);
    never commit what this returns."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StateFormatError(f"cannot read card state {path}: {exc.strerror or exc}") from exc
    return decode_state(raw, key, str(path))


@dataclass
class FileStore:
    """The EEPROM as a file, replaced atomically, sealed under `key` if one is given.

    The first load or commit takes the card's lock (StateLockedError if another process
    holds it); it is held until `close()` or until the store is collected."""

    path: Path
    key: StateKey | None = field(default=None, repr=False)
    writes: int = 0
    _lock: StateLock | None = field(default=None, repr=False)

    def _locked(self) -> None:
        if self._lock is None or not self._lock.held:
            self._lock = StateLock.acquire(self.path)

    def load(self) -> PersistentState:
        self._locked()
        return read_state(self.path, self.key)

    def exists(self) -> bool:
        return self.path.exists()

    def commit(self, state: PersistentState) -> None:
        """All of it or nothing: OSError (ENOSPC, EIO, ...) leaves the old file in place."""
        self._locked()
        write_atomic(self.path, encode_state(state, self.key))
        self.writes += 1

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> FileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class TearingStore:
    """Test facility: power is cut (SIGKILL to this process) right after write number
    `after_writes`, as a card-tearing rig does. The write itself has completed."""

    inner: FileStore
    after_writes: int
    _count: int = field(default=0)

    def load(self) -> PersistentState:
        return self.inner.load()

    def commit(self, state: PersistentState) -> None:
        self.inner.commit(state)
        self._count += 1
        if self._count >= self.after_writes:
            os.kill(os.getpid(), signal.SIGKILL)
