"""Card tearing at random instants: hundreds of seeded SIGKILLs of a card process during
personalisation, PIN change, PIN verification and sealing (the transaction counter's
reservations), and kills at each step of the reservation's write.

Each round forks a card process (the applet over its EEPROM file, driven through an
in-process reader by the terminal code that does the job for real), and kills it with SIGKILL
after a seeded random delay spread over the whole operation. Afterwards the file on disk must
be one of the states the operation passes through (state.py: each commit is atomic), never a
mix, never unreadable; and the PIN try counter never goes back up without the right PIN.

Forking keeps a round to a few milliseconds, so hundreds of kills fit in seconds; the
SIGKILL and the disk are real. test_tearing.py does the same through a whole card process on
the embedded reader.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from card_applet import blom, durable, keys
from card_applet.applet import Applet
from card_applet.state import PIN_MAX_TRIES, FileStore, MemoryStore, PersistentState
from card_applet.vocabulary import ATC_BLOCK
from host.centre.authority import Authority
from host.centre.personalisation import personalise
from terminal.errors import ApduError
from terminal.inprocess import InProcessReader
from terminal.session import CardSession
from tests.e2e.support import HOLDER, PIN, PUK, SELLER, WRONG_PIN

NEW_PIN = "86420"
KILLS = int(os.environ.get("NETTX_TEARING_KILLS", "150"))  # per operation
Job = Callable[[CardSession], None]


class RecordingStore(MemoryStore):
    """A reference run's store: every state committed, in order."""

    def __init__(self, state: PersistentState) -> None:
        super().__init__(state)
        self.history = [state]

    def commit(self, state: PersistentState) -> None:
        super().commit(state)
        self.history.append(state)


def reference_states(start: PersistentState, job: Job) -> list[PersistentState]:
    store = RecordingStore(start)
    job(CardSession(InProcessReader(Applet(store))))
    return store.history


def fork_card(path: Path, job: Job) -> int:
    """A card process: the applet over `path`, doing `job`; returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            job(CardSession(InProcessReader(Applet(FileStore(path)))))
            status = 0
        finally:
            os._exit(status)
    return pid


def duration(path: Path, job: Job, scratch: Path) -> float:
    """How long one undisturbed run takes, fork to exit: the fastest of 5. A run slowed by
    the machine's other work (a median of 3 once read 3x the operation) would spread the
    kills far past the operation's end, and too few would land inside it."""
    times = []
    for _ in range(5):
        shutil.copy(path, scratch)
        start = time.perf_counter()
        _, status = os.waitpid(fork_card(scratch, job), 0)
        times.append(time.perf_counter() - start)
        assert os.waitstatus_to_exitcode(status) == 0
    return min(times)


def kill_after(path: Path, job: Job, delay: float) -> bool:
    """Run the job in a card process and SIGKILL it after `delay`; True if it was killed
    (False: it had finished first)."""
    pid = fork_card(path, job)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == -signal.SIGKILL


def on_disk(path: Path) -> PersistentState:
    return FileStore(path).load()  # raises on a torn (partial) JSON file


def tear_rounds(pristine: Path, job: Job, tmp: Path, seed: int) -> tuple[list[int], int]:
    """KILLS rounds, each from the pristine file; returns, per round, the index of the state
    found on disk in the reference history, and how many rounds were really killed."""
    history = reference_states(on_disk(pristine), job)
    assert len(history) >= 3  # the operation writes more than once: tearing can split it
    span = duration(pristine, job, tmp / "timing.json") * 1.0
    rnd = random.Random(seed)
    work = tmp / "card.json"
    found, killed = [], 0
    for _ in range(KILLS):
        shutil.copy(pristine, work)
        killed += kill_after(work, job, rnd.uniform(0, span))
        state = on_disk(work)
        assert state in history, "the card on disk is none of the operation's states"
        found.append(max(i for i, s in enumerate(history) if s == state))
    return found, killed


@pytest.fixture
def centre(tmp_path: Path) -> Authority:
    authority = Authority(home=tmp_path / "centre")
    authority.init(k=8)
    return authority


def test_torn_personalisation_leaves_old_or_new_state(centre: Authority, tmp_path: Path) -> None:
    pristine = tmp_path / "blank.json"
    centre.manufacture_card(pristine)
    (row,) = centre.rows_for([blom.x_of(HOLDER)])
    master = centre.transport_master

    def job(session: CardSession) -> None:
        # one card key for every run: the torn states are compared with a reference run's
        personalise(session, master, HOLDER, row, PIN, PUK, card_key=bytes(range(32)))

    found, killed = tear_rounds(pristine, job, tmp_path, seed=0x7E4D)
    history = reference_states(on_disk(pristine), job)
    assert killed >= KILLS // 3
    assert 0 in found and len(history) - 1 in found  # blank and locked were both seen
    print(f"personalisation: {KILLS} rounds, {killed} killed; states seen "
          f"{sorted(set(found))} of 0..{len(history) - 1}")


@pytest.fixture
def operational(centre: Authority, tmp_path: Path) -> Path:
    path = tmp_path / "operational.json"
    centre.manufacture_card(path)
    (row,) = centre.rows_for([blom.x_of(HOLDER)])
    personalise(CardSession(InProcessReader(Applet(FileStore(path)))),
                centre.transport_master, HOLDER, row, PIN, PUK)
    return path


def test_torn_pin_change_leaves_old_or_new_pin(operational: Path, tmp_path: Path) -> None:
    def job(session: CardSession) -> None:
        session.select()
        session.change_pin(PIN, NEW_PIN)

    old = on_disk(operational)
    found, killed = tear_rounds(operational, job, tmp_path, seed=0xC4A9)
    history = reference_states(old, job)
    new = history[-1]
    assert new.pin_hash != old.pin_hash and new.pin_tries == PIN_MAX_TRIES
    for i in found:  # old PIN (maybe with the try spent before the comparison) or new PIN
        state = history[i]
        assert state.pin_hash in (old.pin_hash, new.pin_hash)
        assert state.pin_tries in (PIN_MAX_TRIES, PIN_MAX_TRIES - 1)
        assert state.pin_hash == old.pin_hash or state.pin_tries == PIN_MAX_TRIES
    assert killed >= KILLS // 3
    # history[2] equals history[0] (the counter restored before the new PIN is written)
    assert any(history[i].pin_hash == old.pin_hash for i in found)
    assert len(history) - 1 in found
    print(f"PIN change: {KILLS} rounds, {killed} killed; states seen {sorted(set(found))} "
          f"of 0..{len(history) - 1}")


def test_torn_verify_never_raises_the_try_counter(operational: Path, tmp_path: Path) -> None:
    """Rounds on the same file: wrong PINs under random kills; the counter only goes down,
    by at most one per round; when it is spent, the PUK (unkilled) restores it."""

    def job(session: CardSession) -> None:
        session.select()
        with contextlib.suppress(ApduError):  # 63Cx or 6983: the answer is not the point
            session.verify_pin(WRONG_PIN)

    span = duration(operational, job, tmp_path / "timing.json") * 1.0
    rnd = random.Random(0x0E21)
    killed = decrements = unblocks = 0
    for _ in range(KILLS):
        before = on_disk(operational).pin_tries
        if before == 0:
            with FileStore(operational) as store:  # let the card go before the next fork
                session = CardSession(InProcessReader(Applet(store)))
                session.select()
                session.unblock_pin(PUK)
            unblocks += 1
            before = on_disk(operational).pin_tries
        killed += kill_after(operational, job, rnd.uniform(0, span))
        after = on_disk(operational).pin_tries
        assert after in (before, before - 1), (before, after)
        decrements += before - after
    assert killed >= KILLS // 3 and decrements > 0
    print(f"VERIFY: {KILLS} rounds, {killed} killed, {decrements} tries spent on disk, "
          f"{unblocks} unblocks, never a try back")


# -- the transaction counter: no value twice, whatever the kills ----------------------------------


def drain(fd: int) -> list[int]:
    """The counters a card process reported on its pipe (4 bytes each, big-endian)."""
    raw = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 4096):
            raw += chunk
    assert len(raw) % 4 == 0
    return [int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4)]


def sealing(report: int, boxes: int, armed: Callable[[], None] = lambda: None,
            after: int = 0, linger: float = 0.0) -> Job:
    """Seal `boxes` boxes, writing each one's counter to `report` once the terminal has the
    box; `armed` runs (in the card process) after the first `after` boxes; then wait
    `linger` seconds (a kill that comes late still finds the process)."""

    def job(session: CardSession) -> None:
        session.select()
        session.verify_pin(PIN)
        session.set_peer(SELLER)
        for n in range(boxes):
            if n == after:
                armed()
            os.write(report, keys.box_counter(session.encrypt(b"part")).to_bytes(4, "big"))
        time.sleep(linger)

    return job


@pytest.fixture
def report() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    os.close(r)
    os.close(w)


def test_torn_sealing_never_repeats_a_counter(operational: Path, tmp_path: Path,
                                              report: tuple[int, int]) -> None:
    """Rounds on the same file: a card process seals more than a block of boxes and is killed
    at a random instant (in VERIFY's writes, a reservation's, or between). Across every round
    the counters the terminal received strictly increase: none is ever used twice, and the
    reservation on disk covers every one."""
    r, w = report
    boxes = 2 * ATC_BLOCK + 8  # a round that is killed late has crossed two block boundaries
    span = duration(operational, sealing(w, boxes), tmp_path / "timing.json")
    drain(r)
    job = sealing(w, boxes, linger=60)  # every round is killed, however slow the disk
    rnd = random.Random(0xA7C)
    received: list[int] = []
    killed = 0
    for _ in range(KILLS):
        killed += kill_after(operational, job, rnd.uniform(0, span))
        got = drain(r)
        if got:  # one process's values: one by one, above every earlier process's
            assert got == list(range(got[0], got[0] + len(got))), got
            assert not received or got[0] > received[-1], (received[-5:], got[:5])
        received += got
        reserved = on_disk(operational).atc_reserved
        assert not received or received[-1] <= reserved  # every box's value was reserved
    assert killed == KILLS and len(received) > ATC_BLOCK
    restarts = sum(1 for a, b in itertools.pairwise(received) if b - a > 1)
    print(f"sealing: {KILLS} rounds, {killed} killed, {len(received)} boxes received, "
          f"{restarts} jumps over a skipped block, highest {received[-1]}")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def dying(point: str) -> tuple[str, Callable[..., object]]:
    """The durable.py function to replace, and its replacement that kills the card process
    at `point` of the reservation's write (durable.write_atomic_all)."""
    if point == "mid-write":  # half the temporary file written
        real_write = durable.write_all

        def write_half(fd: int, data: bytes) -> None:
            real_write(fd, data[: len(data) // 2])
            die()

        return "write_all", write_half
    if point == "before-rename":  # the temporary file whole and fsynced, not renamed
        real_stage = durable._stage

        def stage_only(path: Path, data: bytes) -> Path:
            real_stage(path, data)
            die()
            raise AssertionError("unreachable")

        return "_stage", stage_only
    assert point == "after-rename"  # the new file in place, its directory not fsynced

    def no_fsync(directory: Path) -> None:
        die()

    return "fsync_directory", no_fsync


# whether the new reservation is on disk after a kill at each point
KILL_POINTS = {"mid-write": False, "before-rename": False, "after-rename": True}


@pytest.mark.parametrize("after", [0, ATC_BLOCK], ids=["first-block", "next-block"])
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_kill_inside_the_reservation_write(operational: Path, report: tuple[int, int],
                                             point: str, after: int) -> None:
    """A card process seals `after` boxes, then dies inside the write of its next
    reservation; the file is the old reservation or the new one, and a restarted card seals
    above every value it ever gave out. Three kills in a row, then a clean run."""
    r, w = report
    lands = KILL_POINTS[point]

    def arm() -> None:  # in the card process only: the test's own process is untouched
        setattr(durable, *dying(point))

    received: list[int] = []
    for _ in range(3):
        before = on_disk(operational).atc_reserved
        pid = fork_card(operational, sealing(w, after + 1, arm, after))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
        got = drain(r)
        assert len(got) == after  # the box whose reservation tore never came out
        assert not received or not got or got[0] > received[-1]
        received += got
        reserved = on_disk(operational).atc_reserved  # whole, never a torn file
        block = before + (after > 0) * ATC_BLOCK  # what the first boxes reserved
        assert reserved == (block + ATC_BLOCK if lands else block), (point, before, reserved)
    pid = fork_card(operational, sealing(w, 3))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    clean = drain(r)
    assert clean[0] == on_disk(operational).atc_reserved - ATC_BLOCK + 1
    assert not received or clean[0] > received[-1]
    assert clean == list(range(clean[0], clean[0] + 3))
