"""The trusted centre: master matrix, row issuance, registry, card manufacture.

Files under HOME/authority/ (all 0600):
    master.bin      the master's upper triangle, 32 bytes an element, with a header (magic,
                    version, k, SHA-256): host/centre/master.py
    transport.key   hex of the master transport key (card keys are diversified from it)
    registry.db     SQLite: every issued identifier, its x, and the card serial if any

A centre made before master.bin has master.json (the vectors' JSON format): it is read, and
converted to master.bin (written atomically, then the JSON removed) the first time a command
reads it, so the next command reads the master at disk speed.

Issuance is O(k^2) per row; a batch is one matrix product R = V * D, V the Vandermonde rows
[x^0 .. x^(k-1)] of the batch, done block by block and exactly in float64 BLAS products mod
25 small primes (host/centre/issuance.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from card_applet import blom
from card_applet.durable import fsync_directory
from host.centre.files import write_secret, write_secrets
from host.centre.master import Master
from host.errors import AuthorityError

# the card's state and keys (AES) are needed to manufacture a card only: imported there, so
# that issuing rows does not load them; numpy (host.centre.issuance) likewise is imported by
# the commands that compute rows only
if TYPE_CHECKING:
    from card_applet.sealing import StateKey

__all__ = ["Authority", "Master", "read_row_file", "row_file_name", "write_row_file",
           "write_row_files"]

log = logging.getLogger(__name__)

DEFAULT_K = 512
ROWS_DIR = "rows"  # under the home: where `nettx authority issue` writes by default
TRANSPORT_KEY_SIZE = 32
BATCH = 64  # rows per matrix product; progress is reported per batch


class Authority:
    def __init__(self, home: Path) -> None:
        self.dir = home / "authority"
        self._master: Master | None = None

    # -- files ------------------------------------------------------------------------------

    @property
    def master_path(self) -> Path:
        return self.dir / "master.bin"

    @property
    def legacy_master_path(self) -> Path:
        """Where a centre made before master.bin keeps its master (the JSON format)."""
        return self.dir / "master.json"

    @property
    def transport_path(self) -> Path:
        return self.dir / "transport.key"

    def exists(self) -> bool:
        return self.master_path.exists() or self.legacy_master_path.exists()

    def init(self, k: int = DEFAULT_K, master: Master | None = None, force: bool = False) -> Master:
        if self.exists() and not force:
            raise AuthorityError(f"a centre already exists in {self.dir} (use --force to "
                                 "replace it: every issued row becomes useless)")
        master = master or Master.generate(k)
        # both or neither: a new master with the old transport key (or the reverse) is a
        # centre no card fits
        write_secrets([(self.transport_path,
                        secrets.token_bytes(TRANSPORT_KEY_SIZE).hex().encode()),
                       (self.master_path, master.header() + master.packed)])
        self._drop_legacy_master()
        registry = self.dir / "registry.db"
        if registry.exists():
            registry.unlink()
        self._master = master
        with self._db():
            pass
        return master

    @property
    def master(self) -> Master:
        if self._master is None:
            if self.master_path.exists():  # after a cut conversion both exist: this one is whole
                self._master = Master.read(self.master_path)
            elif self.legacy_master_path.exists():
                self._master = Master.read(self.legacy_master_path)
                self._convert_legacy_master(self._master)
            else:
                raise AuthorityError(f"no centre in {self.dir}: run `nettx authority init`")
        return self._master

    def _convert_legacy_master(self, master: Master) -> None:
        """master.json -> master.bin: the binary file is written whole (or not at all)
        before the JSON goes. A failed write leaves the JSON, still good, for next time."""
        try:
            write_secret(self.master_path, master.header() + master.packed)
        except OSError as exc:
            log.warning("could not convert %s to %s (%s); it stays as it is",
                        self.legacy_master_path, self.master_path.name, exc.strerror or exc)
            return
        self._drop_legacy_master()

    def _drop_legacy_master(self) -> None:
        if self.legacy_master_path.exists():
            self.legacy_master_path.unlink()
            fsync_directory(self.dir)

    @property
    def transport_master(self) -> bytes:
        if not self.transport_path.exists():
            raise AuthorityError(f"no transport key in {self.dir}: run `nettx authority init`")
        try:
            key = bytes.fromhex(self.transport_path.read_text(encoding="ascii").strip())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise AuthorityError(f"{self.transport_path}: not a transport key ({exc})") from exc
        if len(key) != TRANSPORT_KEY_SIZE:
            raise AuthorityError(f"{self.transport_path}: not a transport key ({len(key)} "
                                 f"bytes, expected {TRANSPORT_KEY_SIZE})")
        return key

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """One transaction on the registry; the connection is closed afterwards (sqlite3's
        own `with` only commits or rolls back)."""
        if not self.exists():  # else sqlite3 fails with "unable to open database file"
            raise AuthorityError(f"no centre in {self.dir}: run `nettx authority init`")
        path = self.dir / "registry.db"
        if not path.exists():  # 0600 as the other files: sqlite would create it 0644
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(path)
        db.execute("""CREATE TABLE IF NOT EXISTS identifiers (
                        id TEXT PRIMARY KEY, x TEXT NOT NULL UNIQUE, serial TEXT,
                        issued_at REAL NOT NULL)""")
        try:
            with db:
                yield db
        finally:
            db.close()

    # -- issuance ---------------------------------------------------------------------------

    def registered(self) -> list[tuple[str, str, str | None, float]]:
        with self._db() as db:
            return db.execute("SELECT id, x, serial, issued_at FROM identifiers "
                              "ORDER BY issued_at").fetchall()

    def check_new(self, identifiers: Sequence[str]) -> list[int]:
        """x of each identifier; refuses empty, over-long, x = 0, repeats and collisions."""
        xs: list[int] = []
        seen: dict[int, str] = {}
        with self._db() as db:
            for identifier in identifiers:
                try:
                    x = blom.x_of(identifier)
                except blom.IdentifierError as exc:
                    raise AuthorityError(f"{identifier!r}: {exc}") from exc
                if x == 0:
                    raise AuthorityError(f"{identifier!r} maps to x = 0")
                if x in seen:
                    raise AuthorityError(f"{identifier!r} repeats or collides with "
                                         f"{seen[x]!r} in this batch")
                row = db.execute("SELECT id, serial, issued_at FROM identifiers "
                                 "WHERE id = ? OR x = ?", (identifier, f"{x:064x}")).fetchone()
                if row is not None and row[0] != identifier:
                    raise AuthorityError(f"{identifier!r} collides with issued {row[0]!r}")
                if row is not None:
                    raise AuthorityError(self._already_issued(identifier, row[1], row[2]))
                seen[x] = identifier
                xs.append(x)
        return xs

    def _already_issued(self, identifier: str, serial: str | None, issued_at: float) -> str:
        # A row exists in one place only (its card, or the file its party was given): the
        # centre could derive it again from the master but does not hand out a second copy,
        # so say where the first one went.
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(issued_at))
        if serial is not None:
            return (f"{identifier!r} was issued onto card {serial} on {when}: its row never "
                    "leaves that card, and the centre issues an identifier once")
        default = self.dir.parent / ROWS_DIR / row_file_name(identifier)
        where = (f"its row file is {default}" if default.exists() else
                 f"its row file is {row_file_name(identifier)} in the directory that issue "
                 f"wrote to (--out; by default {default.parent})")
        return (f"{identifier!r} is already issued (on {when}): {where}; the centre issues "
                "an identifier once (a lost row file needs a new identifier)")

    def rows_for(self, xs: Sequence[int],
                 progress: Callable[[int], None] | None = None) -> list[list[int]]:
        """Rows for points xs, BATCH at a time, as V * D (D symmetric, so row = v^T D)."""
        return [blom.row_from_bytes(row) for row in self.packed_rows(xs, progress)]

    def packed_rows(self, xs: Sequence[int],
                    progress: Callable[[int], None] | None = None) -> list[bytes]:
        """rows_for's rows as their elements' bytes (k x 32, big-endian), which the row
        files are written from without a Python integer per element."""
        from host.centre import issuance

        master = self.master
        rows: list[bytes] = []
        for start in range(0, len(xs), BATCH):
            chunk = xs[start : start + BATCH]
            rows.extend(issuance.packed_rows(master, chunk))
            if progress:
                progress(len(chunk))
        return rows

    def register(self, identifiers: Iterable[str], serial: bytes | None = None) -> None:
        now = time.time()
        try:
            with self._db() as db:
                db.executemany("INSERT INTO identifiers VALUES (?, ?, ?, ?)",
                               [(i, f"{blom.x_of(i):064x}", serial.hex() if serial else None,
                                 now) for i in identifiers])
        except sqlite3.IntegrityError as exc:
            raise AuthorityError(f"registry refused: {exc}") from exc

    def issue(self, identifiers: Sequence[str],
              progress: Callable[[int], None] | None = None) -> dict[str, list[int]]:
        """Issue and register rows; nothing is registered unless every row is computed."""
        return {identifier: blom.row_from_bytes(row)
                for identifier, row in self.issue_packed(identifiers, progress).items()}

    def issue_packed(self, identifiers: Sequence[str],
                     progress: Callable[[int], None] | None = None) -> dict[str, bytes]:
        """issue, each row as its elements' bytes (k x 32, big-endian)."""
        xs = self.check_new(identifiers)
        rows = self.packed_rows(xs, progress)
        self.register(identifiers)
        return dict(zip(identifiers, rows, strict=True))

    def pair_key(self, id_a: str, id_b: str) -> bytes:
        try:
            xa, xb = blom.x_of(id_a), blom.x_of(id_b)
        except blom.IdentifierError as exc:
            raise AuthorityError(str(exc)) from exc
        (row_a,) = self.rows_for([xa])
        return blom.pair_key(blom.shared_element(row_a, xb), id_a, id_b)

    # -- cards ------------------------------------------------------------------------------

    def manufacture_card(self, path: Path, state_key: StateKey | None = None) -> bytes:
        """Write a blank card's EEPROM: fresh serial, transport key diversified from ours;
        sealed under `state_key` if one is given."""
        from card_applet.keys import diversify_transport_key
        from card_applet.state import FileStore, manufacture

        if path.exists():
            raise AuthorityError(f"{path} already holds a card")
        serial = secrets.token_bytes(8)
        key = diversify_transport_key(self.transport_master, serial)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileStore(path, state_key) as store:
            store.commit(manufacture(key, serial))
        return serial


def row_file_name(identifier: str) -> str:
    """The row file `nettx authority issue` writes for `identifier` (in HOME/rows by default)."""
    return f"{identifier.replace('/', '_').replace(':', '_')}.row.json"


def row_file_bytes(identifier: str, row: Sequence[int] | bytes) -> bytes:
    """The row file: {"format": 1, "id": ..., "k": ..., "row_hex": [...]} as json.dumps
    writes it with indent=1, byte for byte, built directly: json's indented encoder is pure
    Python, about 1 us an element, a third of a second for 64 rows at k = 4096. A row given
    as bytes (k x 32, big-endian: Authority.packed_rows) is hexed in one call."""
    if isinstance(row, bytes):
        whole, step = row.hex(), 2 * blom.ELEMENT_SIZE
        hexes = [whole[at : at + step] for at in range(0, len(whole), step)]
    else:
        hexes = [f"{v:064x}" for v in row]
    hexed = '",\n  "'.join(hexes)
    return (f'{{\n "format": 1,\n "id": {json.dumps(identifier)},\n "k": {len(hexes)},\n'
            f' "row_hex": [\n  "{hexed}"\n ]\n}}').encode()


def write_row_file(path: Path, identifier: str, row: Sequence[int]) -> None:
    write_secret(path, row_file_bytes(identifier, row))


def write_row_files(files: Sequence[tuple[Path, str, Sequence[int] | bytes]]) -> None:
    """Several row files together (path, identifier, row): none is replaced unless all of
    them were written, and their directory is fsynced once, not once per file."""
    write_secrets([(path, row_file_bytes(identifier, row)) for path, identifier, row in files])


def read_row_file(path: Path) -> tuple[str, list[int]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise TypeError("expected a JSON object")
        # a hex string where the list belongs would otherwise be read digit by digit
        if not isinstance(doc["row_hex"], list) or not isinstance(doc["id"], str):
            raise TypeError("row_hex must be a list of hex strings and id a string")
        if not all(isinstance(h, str) for h in doc["row_hex"]):
            raise TypeError("row_hex must be a list of hex strings")
        row = [int(h, 16) for h in doc["row_hex"]]
        identifier = doc["id"]
        blom.identifier_bytes(identifier)
    except (OSError, ValueError, KeyError, TypeError, blom.IdentifierError) as exc:
        raise AuthorityError(f"{path}: not a row file ({exc})") from exc
    if not row or any(not 0 <= v < blom.P for v in row):
        raise AuthorityError(f"{path}: row elements out of range")
    return identifier, row
