"""The card's state file: exclusive temporary files, 0600, all-or-nothing writes (6581 on a
full disk), and sealing at rest. The attacks run against the real FileStore on disk."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from card_applet import blom
from card_applet import durable as durable_module
from card_applet.applet import Applet
from card_applet.sealing import HEADER_SIZE, MAGIC, StateKey, is_sealed
from card_applet.state import FileStore, PersistentState, read_state
from card_applet.store_errors import StateFormatError, StateKeyError
from card_applet.vocabulary import ATC_BLOCK
from host.centre.personalisation import personalise
from terminal.errors import ApduError, WrongPinError
from terminal.inprocess import InProcessReader
from terminal.session import CardSession
from tests.conftest import HOLDER, PIN, PUK, SELLER, Centre
from tests.diskfaults import FullDisk, ShortThenZero

NOBODY = 65534
KEY = StateKey(bytes(range(32)))
WRONG_KEY = StateKey(bytes(range(1, 33)))


def other_users_file(path: Path, content: bytes = b"planted") -> None:
    path.write_bytes(content)
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, 0o666)


def assert_ours_0600(path: Path) -> None:
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode), "the card file must be a regular file, not a link"
    assert info.st_uid == os.getuid()
    assert stat.S_IMODE(info.st_mode) == 0o600


def no_temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# -- issue 10 item 6: the temporary file ------------------------------------------------------


def test_a_planted_tmp_file_never_becomes_the_card_file(card_state: Path) -> None:
    before = read_state(card_state)
    planted = card_state.with_name(card_state.name + ".tmp")
    other_users_file(planted)
    with FileStore(card_state) as store:
        store.commit(before.with_(atc_reserved=before.atc_reserved + 1))
    assert_ours_0600(card_state)
    assert read_state(card_state) == before.with_(atc_reserved=before.atc_reserved + 1)
    assert planted.read_bytes() == b"planted" and planted.stat().st_uid == NOBODY


def test_a_planted_tmp_symlink_is_never_written_through(card_state: Path,
                                                        tmp_path: Path) -> None:
    before = read_state(card_state)
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    other_users_file(victim, b"someone else's file")
    card_state.with_name(card_state.name + ".tmp").symlink_to(victim)
    with FileStore(card_state) as store:
        store.commit(before.with_(atc_reserved=7))
    assert_ours_0600(card_state)
    assert read_state(card_state).atc_reserved == 7
    assert victim.read_bytes() == b"someone else's file"  # not written through the link
    assert stat.S_IMODE(victim.stat().st_mode) == 0o666


def test_every_file_store_write_is_0600_whatever_the_umask(card_state: Path) -> None:
    old = os.umask(0)
    try:
        with FileStore(card_state) as store:
            store.commit(read_state(card_state).with_(atc_reserved=3))
    finally:
        os.umask(old)
    assert_ours_0600(card_state)


# -- issue 11 item 2: all the bytes or nothing ------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[int], FullDisk]:
    def fill(free: int) -> FullDisk:
        disk = FullDisk(tmp_path, free)
        monkeypatch.setattr(os, "write", disk)
        return disk

    return fill


@pytest.fixture
def operational(card_state: Path) -> Iterator[tuple[CardSession, Applet]]:
    store = FileStore(card_state)
    applet = Applet(store)
    session = CardSession(InProcessReader(applet))
    session.select()
    yield session, applet
    store.close()


def sw_of(call: Callable[[], object]) -> int:
    with pytest.raises(ApduError) as err:
        call()
    return err.value.sw


@pytest.mark.parametrize("free", [0, 100, -1], ids=["no-space", "100-bytes", "one-byte-short"])
def test_a_full_disk_answers_6581_and_keeps_the_card(operational: tuple[CardSession, Applet],
                                                     card_state: Path,
                                                     full_disk: Callable[[int], FullDisk],
                                                     free: int) -> None:
    session, applet = operational
    size = card_state.stat().st_size
    free = size - 1 if free < 0 else free
    assert free < size
    session.verify_pin(PIN)
    session.set_peer(SELLER)
    committed = read_state(card_state)
    disk = full_disk(free)

    assert sw_of(lambda: session.encrypt(b"4970101234567890")) == 0x6581  # not 9000
    # a wrong PIN: the try cannot be counted, so the PIN is not compared (no 63Cx)
    assert sw_of(lambda: session.verify_pin("9999")) == 0x6581
    assert sw_of(lambda: session.change_pin(PIN, "5678")) == 0x6581
    assert sw_of(lambda: session.unblock_pin(PUK, "5678")) == 0x6581
    assert disk.refused >= 4

    # the file is whole and unchanged, memory agrees with it, no temporary is left behind
    assert read_state(card_state) == committed
    assert applet.state == committed
    assert no_temporaries(card_state.parent) == []

    os.write = disk.real  # space comes back
    session.verify_pin(PIN)  # the old PIN: CHANGE PIN did not happen
    assert read_state(card_state).pin_tries == committed.pin_tries
    session.set_peer(SELLER)
    session.encrypt(b"4970101234567890")
    # the first box after the failure reserved a block: counters start above the old mark
    assert read_state(card_state).atc_reserved == committed.atc_reserved + ATC_BLOCK
    assert applet.atc == committed.atc_reserved + 1
    with pytest.raises(WrongPinError) as wrong:
        session.verify_pin("9999")
    assert wrong.value.tries_left == committed.pin_tries - 1


def test_a_write_of_zero_bytes_is_a_failure_not_a_loop(card_state: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    committed = read_state(card_state)
    disk = ShortThenZero(tmp_path, 10)
    monkeypatch.setattr(os, "write", disk)
    with FileStore(card_state) as store, pytest.raises(OSError) as err:
        store.commit(committed.with_(atc_reserved=9))
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert read_state(card_state) == committed
    assert no_temporaries(card_state.parent) == []


def test_a_failed_fsync_keeps_the_old_file(card_state: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    committed = read_state(card_state)

    def eio(*_: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(durable_module.os, "fsync", eio)
    with FileStore(card_state) as store, pytest.raises(OSError):
        store.commit(committed.with_(atc_reserved=5))
    monkeypatch.undo()
    assert read_state(card_state) == committed
    assert no_temporaries(card_state.parent) == []


# -- issue 10 item 11: sealing at rest --------------------------------------------------------


def sealed_card(centre: Centre, path: Path, key: StateKey) -> tuple[Path, list[int]]:
    centre.authority.manufacture_card(path, key)
    (row,) = centre.authority.rows_for([blom.x_of(HOLDER)])
    with FileStore(path, key) as store:
        personalise(CardSession(InProcessReader(Applet(store))),
                    centre.authority.transport_master, HOLDER, row, PIN, PUK)
    return path, row


def secret_encodings(state: PersistentState, row: list[int]) -> list[bytes]:
    """Every form a secret of the card could take in a file: raw bytes and hex text."""
    assert state.row is not None and state.pin_hash is not None and state.puk_hash is not None
    secrets = [blom.element_to_bytes(v) for v in row]
    secrets += [state.pin_salt, state.pin_hash, state.puk_hash, state.transport_key]
    return secrets + [s.hex().encode() for s in secrets]


def test_a_sealed_state_holds_no_row_bytes_and_no_pin_hash(centre: Centre,
                                                           tmp_path: Path) -> None:
    path, row = sealed_card(centre, tmp_path / "card.json", KEY)
    raw = path.read_bytes()
    assert raw.startswith(MAGIC) and is_sealed(raw)
    state = read_state(path, KEY)
    assert state.row == blom.row_to_bytes(row)  # the key opens it: the row is in there
    for secret in secret_encodings(state, row):
        assert secret not in raw
    assert HOLDER.encode() not in raw and HOLDER.encode().hex().encode() not in raw
    # the check can see a leak: the same card, plain
    plain = tmp_path / "plain.json"
    with FileStore(plain) as store:
        store.commit(state)
    assert all(s in plain.read_bytes() for s in secret_encodings(state, row)[len(row) + 4 :])


def test_every_write_is_sealed_afresh(centre: Centre, tmp_path: Path) -> None:
    path, _ = sealed_card(centre, tmp_path / "card.json", KEY)
    first = path.read_bytes()
    with FileStore(path, KEY) as store:
        store.commit(store.load())
    second = path.read_bytes()
    assert first[:6] == second[:6]  # magic, version, suite
    assert first[6:HEADER_SIZE] != second[6:HEADER_SIZE]  # a fresh salt and nonce
    assert read_state(path, KEY) == read_state(path, KEY)


def test_wrong_key_missing_key_and_tampering_are_clear_errors(centre: Centre,
                                                              tmp_path: Path) -> None:
    path, _ = sealed_card(centre, tmp_path / "card.json", KEY)
    with pytest.raises(StateKeyError, match="wrong state key"):
        read_state(path, WRONG_KEY)
    with pytest.raises(StateKeyError, match="is sealed: give its state key"):
        FileStore(path).load()
    raw = bytearray(path.read_bytes())
    raw[10] ^= 1  # the salt: the header is authenticated
    path.write_bytes(bytes(raw))
    with pytest.raises(StateKeyError, match=r"wrong state key .* altered"):
        read_state(path, KEY)
    path.write_bytes(MAGIC + b"\x02\x01" + bytes(60))
    with pytest.raises(StateFormatError, match="version 2"):
        read_state(path, KEY)


def test_a_plain_state_loads_without_a_key_and_is_refused_with_one(card_state: Path) -> None:
    assert card_state.read_bytes().startswith(b"{")
    assert FileStore(card_state).load().holder_id is not None
    with pytest.raises(StateKeyError, match="not sealed"):
        read_state(card_state, KEY)


def test_state_keys_are_at_least_16_bytes_and_never_printed() -> None:
    with pytest.raises(StateKeyError, match="16 to 4096 bytes"):
        StateKey(b"short")
    assert StateKey.parse(b"k" * 32 + b"\n") == StateKey(b"k" * 32)
    assert "k" * 16 not in repr(StateKey(b"k" * 32))
