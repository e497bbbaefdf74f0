"""The full-disk scenario of issue 11 item 2, on a real (small) filesystem.

    python -m tests.e2e.diskfull DIR

DIR is a small tmpfs the caller mounted in a private mount namespace (test_full_disk.py does
`unshare --mount` then `mount -t tmpfs`). A k = 64 card (a state of about 4.6 KB) and a
centre live on it; the disk is filled to leave one 4 KiB page, then the card's writing
commands and the centre's writes are tried, the space given back, and tried again. Prints
one JSON document of facts (status words, files, free space); the test judges them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import sys
from pathlib import Path

from card_applet.applet import Applet
from card_applet.state import FileStore, read_state
from host.centre.authority import Authority, write_row_file
from host.centre.personalisation import issue_onto_card
from terminal.errors import ApduError
from terminal.inprocess import InProcessReader
from terminal.session import CardSession

HOLDER, SELLER = "holder:alice@example.org", "seller:shop.example"
PIN, PUK, NEW_PIN = "1234", "12345678", "5678"
PAGE = 4096


def fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem, then give back `leave` bytes (whole pages on tmpfs)."""
    filler = directory / "filler"
    chunk = b"\0" * PAGE
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                if os.write(fd, chunk) < len(chunk):
                    break
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def sw(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except ApduError as exc:
        return f"{exc.sw:04X}"
    return "9000"


def outcome(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except (OSError, sqlite3.Error) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def main(directory: Path) -> dict[str, object]:
    facts: dict[str, object] = {"fs": os.statvfs(directory).f_blocks * PAGE}
    centre = Authority(directory / "home")
    centre.init(k=64)
    card = directory / "card.json"
    centre.manufacture_card(card)
    store = FileStore(card)
    session = CardSession(InProcessReader(Applet(store)))
    session.select()
    issue_onto_card(centre, session, HOLDER, PIN, PUK)
    session.select()
    session.verify_pin(PIN)
    session.set_peer(SELLER)
    before = read_state(card)
    registered = centre.registered()
    master = centre.master_path.read_bytes()
    facts["state_size"] = card.stat().st_size

    filler = fill(directory, PAGE)
    facts["free_when_full"] = free_bytes(directory)
    facts["encipher"] = sw(lambda: session.encrypt(b"4970101234567890 09/29"))
    facts["wrong_verify"] = sw(lambda: session.verify_pin("9999"))
    facts["change_pin"] = sw(lambda: session.change_pin(PIN, NEW_PIN))
    facts["unblock"] = sw(lambda: session.unblock_pin(PUK, NEW_PIN))
    facts["state_intact"] = read_state(card) == before
    facts["memory_is_file"] = session.reader.applet.state == before  # type: ignore[attr-defined]
    facts["issue"] = outcome(lambda: centre.issue(["delivery:post.example"]))
    facts["registry_intact"] = Authority(directory / "home").registered() == registered
    facts["row_file"] = outcome(lambda: write_row_file(directory / "rows" / "x.row.json",
                                                       "seller:x", list(range(1, 65))))
    facts["reinit"] = outcome(lambda: Authority(directory / "home").init(k=64, force=True))
    facts["master_intact"] = centre.master_path.read_bytes() == master
    facts["leftovers"] = sorted(str(p.relative_to(directory)) for p in directory.rglob("*.tmp"))
    facts["free_after_failures"] = free_bytes(directory)

    filler.unlink()  # space comes back
    facts["after_verify"] = sw(lambda: session.verify_pin(PIN))
    session.set_peer(SELLER)
    facts["after_encipher"] = sw(lambda: session.encrypt(b"4970101234567890 09/29"))
    facts["after_wrong_verify"] = sw(lambda: session.verify_pin("9999"))
    facts["after_change_pin"] = sw(lambda: session.change_pin(PIN, NEW_PIN))
    after = read_state(card)
    facts["after_atc"] = [before.atc_reserved, after.atc_reserved]
    facts["after_issue"] = outcome(lambda: centre.issue(["delivery:post.example"]))
    with contextlib.suppress(OSError):
        store.close()
    return facts


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
