"""The card's state: persistent (its EEPROM) and volatile (RAM, lost on reset).

Persistent state is one frozen dataclass, replaced whole: a handler builds the new state and
commits it, so a command either happens completely or not at all. `FileStore` makes that
true on disk too: write a temporary file, fsync it, rename it over the old one, fsync the
directory. A kill at any instant leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Protocol

PIN_MAX_TRIES = 3
PUK_MAX_TRIES = 3
STATE_FORMAT = 1


class Lifecycle(IntEnum):
    """ISO/IEC 7816-4 table 13 life cycle status byte."""

    PERSONALISATION = 0x03  # "initialisation state": only personalisation commands
    OPERATIONAL = 0x05  # "operational state (activated)": locked for good


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
    atc: int = 0  # application transaction counter, +1 before every ENCIPHER
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
        doc = json.loads(text)
        if doc.pop("format", None) != STATE_FORMAT:
            raise ValueError("unknown card state format")
        byte_fields = {"serial", "transport_key", "pin_salt", "holder_id", "row", "pin_hash",
                       "puk_hash", "card_auth_key"}
        kwargs = {k: (bytes.fromhex(v) if k in byte_fields and v is not None else v)
                  for k, v in doc.items()}
        kwargs["lifecycle"] = Lifecycle(kwargs["lifecycle"])
        return cls(**kwargs)


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


@dataclass
class FileStore:
    """The EEPROM as a file, replaced atomically."""

    path: Path
    writes: int = 0

    def load(self) -> PersistentState:
        return PersistentState.from_json(self.path.read_text())

    def exists(self) -> bool:
        return self.path.exists()

    def commit(self, state: PersistentState) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, state.to_json().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.writes += 1


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
