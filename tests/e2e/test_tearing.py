"""Card tearing: power cut (SIGKILL) in the middle of VERIFY never yields a free PIN guess,
and in the middle of ENCIPHER never a counter value twice.

The applet decrements and persists the try counter *before* comparing the PIN, and restores
it only after a match; FileStore writes are atomic (rename). So whenever the card process
dies, the EEPROM file on disk is whole, and every wrong try the terminal saw answered is
already counted there. Likewise the transaction counter's next block is reserved on disk
before a value in it is used: a card killed after the reservation starts above it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from card_applet import keys
from card_applet.state import PIN_MAX_TRIES, read_state
from card_applet.vocabulary import ATC_BLOCK
from terminal.errors import CardRemovedError, ReaderError, WrongPinError
from terminal.session import CardSession
from tests.e2e.support import PIN, PUK, SELLER, WRONG_PIN, card_on_embedded_reader

TEAR = ["--tear-after-writes", "1"]


def pin_tries_on_disk(path: Path) -> int:
    json.loads(path.read_text())  # whole JSON, not a torn write
    return read_state(path).pin_tries  # no lock: a card process may hold it


@pytest.mark.parametrize("pin", [WRONG_PIN, PIN], ids=["wrong-pin", "right-pin"])
def test_torn_verify_dies_unanswered_with_the_try_already_counted(card_file: Path,
                                                                   pin: str) -> None:
    assert pin_tries_on_disk(card_file) == PIN_MAX_TRIES

    with card_on_embedded_reader(card_file, extra=TEAR) as (reader, card):
        session = CardSession(reader)
        session.select()  # reads only: no EEPROM write yet
        with pytest.raises(CardRemovedError):
            session.verify_pin(pin)
        assert card.proc.wait(timeout=10) == -signal.SIGKILL

    assert pin_tries_on_disk(card_file) == PIN_MAX_TRIES - 1
    assert not card_file.with_name(card_file.name + ".tmp").exists()


def test_after_a_torn_verify_the_right_pin_restores_the_counter(card_file: Path) -> None:
    with card_on_embedded_reader(card_file, extra=TEAR) as (reader, _card):
        session = CardSession(reader)
        session.select()
        with pytest.raises(CardRemovedError):
            session.verify_pin(PIN)
    assert pin_tries_on_disk(card_file) == PIN_MAX_TRIES - 1

    with card_on_embedded_reader(card_file) as (reader, _card):
        session = CardSession(reader)
        assert session.select().pin_tries == PIN_MAX_TRIES - 1
        session.verify_pin(PIN)
    assert pin_tries_on_disk(card_file) == PIN_MAX_TRIES


def test_torn_encipher_skips_the_reserved_block_and_never_reuses_a_value(
        card_file: Path) -> None:
    """The card dies right after writing the reservation of its first block, before the box
    exists (VERIFY's two writes, then the reservation: the third). The restarted card goes on
    above the reservation: the values of the torn block are skipped, none is used twice."""
    with card_on_embedded_reader(card_file) as (reader, _card):
        session = CardSession(reader)
        session.select()
        session.verify_pin(PIN)
        session.set_peer(SELLER)
        first = keys.box_counter(session.encrypt(b"before the tear"))
    assert read_state(card_file).atc_reserved == ATC_BLOCK >= first == 1

    with card_on_embedded_reader(card_file, extra=["--tear-after-writes", "3"]) as (reader,
                                                                                    card):
        session = CardSession(reader)
        assert session.select().atc == ATC_BLOCK  # a new process: the first block is spent
        session.verify_pin(PIN)
        session.set_peer(SELLER)
        with pytest.raises(CardRemovedError):
            session.encrypt(b"torn")
        assert card.proc.wait(timeout=10) == -signal.SIGKILL
    assert read_state(card_file).atc_reserved == 2 * ATC_BLOCK  # reserved, never used

    with card_on_embedded_reader(card_file) as (reader, _card):
        session = CardSession(reader)
        assert session.select().atc == 2 * ATC_BLOCK
        session.verify_pin(PIN)
        session.set_peer(SELLER)
        after = [keys.box_counter(session.encrypt(b"after")) for _ in range(2)]
    assert after == [2 * ATC_BLOCK + 1, 2 * ATC_BLOCK + 2]
    assert read_state(card_file).atc_reserved == 3 * ATC_BLOCK


@dataclass
class Round:
    tries_before: int
    tries_after: int
    answer: int | None  # the status word the terminal saw, None if the card died first


def kill_during_verify(state: Path, delay: float) -> Round:
    """One card process: unblock if needed, send a wrong VERIFY, SIGKILL the process
    `delay` seconds after the command goes out, and see what reached the terminal and disk."""
    with card_on_embedded_reader(state) as (reader, card):
        session = CardSession(reader)
        if session.select().pin_tries == 0:
            session.unblock_pin(PUK)
        tries_before = pin_tries_on_disk(state)
        answer: list[int] = []
        sent = threading.Event()

        def verify() -> None:
            sent.set()
            try:
                session.verify_pin(WRONG_PIN)
            except WrongPinError as err:
                answer.append(err.sw)
            except ReaderError:
                pass  # the card died before answering

        worker = threading.Thread(target=verify)
        worker.start()
        try:
            sent.wait()
            time.sleep(delay)
            os.kill(card.pid, signal.SIGKILL)
            card.proc.wait(timeout=10)
        finally:
            worker.join(timeout=30)
        assert not worker.is_alive()
    return Round(tries_before, pin_tries_on_disk(state), answer[0] if answer else None)


@pytest.mark.slow
def test_random_kills_during_verify_never_give_a_free_try(card_file: Path) -> None:
    rnd = random.Random(0x0791901)
    rounds = [kill_during_verify(card_file, rnd.uniform(0, 0.005)) for _ in range(30)]

    for r in rounds:
        assert r.tries_after <= r.tries_before, r  # the counter never goes up
        assert r.tries_before - r.tries_after in (0, 1), r
        if r.answer is not None:  # an answered wrong try is on disk, with the count it told
            assert r.tries_after == r.tries_before - 1, r
            assert r.answer == 0x63C0 | r.tries_after, r
    decrements = sum(r.tries_before - r.tries_after for r in rounds)
    answered = sum(r.answer is not None for r in rounds)
    assert decrements >= answered
    print(f"{len(rounds)} kills: {decrements} decrements on disk, {answered} answered")
