"""The transaction counter reserved in blocks: ENCIPHER writes the EEPROM once per ATC_BLOCK
boxes, committing the next reservation before any value in it is used; a reset or a new card
process starts above the reservation (the rest of the block is skipped, never reused); the
top of the range is exact; an old state file (format 1, `atc`) loads as its reservation.
Tearing at the reservation commit is tests/e2e/test_tearing_random.py's."""

from __future__ import annotations

import errno
import json

import pytest

from card_applet.applet import Applet
from card_applet.state import STATE_FORMAT, MemoryStore, PersistentState, decode_state
from card_applet.store_errors import StateFormatError
from card_applet.vocabulary import ATC_BLOCK, ATC_MAX
from tests.card_applet.applet_helpers import (
    ENCIPHER,
    OK,
    assert_unchanged,
    encipher,
    open_as_seller,
    pso_data,
    snapshot,
)
from tests.card_applet.conftest import SELLER, CardDriver, driver_for, personalised_state


def counter_of(box: bytes) -> int:
    counter, _ = open_as_seller(box)  # authenticated: the counter is the one the card sealed
    return counter


def ready(card: CardDriver) -> CardDriver:
    """After a reset: SELECT, VERIFY, MSE again (the applet's RAM is gone)."""
    for reply in (card.select(), card.verify(), card.set_peer(SELLER)):
        assert reply.sw == OK
    return card


def atc_of(card: CardDriver) -> int:
    reply = card.get_data(0xC6)
    assert reply.sw == OK
    return int.from_bytes(reply.data, "big")


# -- block boundaries ---------------------------------------------------------------------------


def test_one_eeprom_write_per_block_and_never_a_value_outside_it(ready_card: CardDriver) -> None:
    writes = ready_card.store.writes
    assert ready_card.state.atc_reserved == 0
    for value in range(1, 3 * ATC_BLOCK + 2):
        assert counter_of(encipher(ready_card, b"part")) == value
        # the value just used is covered by the reservation on "disk"
        assert value <= ready_card.state.atc_reserved == ATC_BLOCK * -(-value // ATC_BLOCK)
        assert ready_card.store.writes - writes == -(-value // ATC_BLOCK)
        assert atc_of(ready_card) == value  # GET DATA: the last value spent
    assert ready_card.store.writes - writes == 4  # 97 boxes, 4 reservations


def test_the_reservation_is_committed_before_its_first_value_is_used(
        ready_card: CardDriver) -> None:
    """The store sees the reservation covering value v before the box carrying v exists."""
    seen: list[int] = []

    class Watching(MemoryStore):
        def commit(self, state: PersistentState) -> None:
            seen.append(ready_card.applet.atc)  # RAM's last value when the write happens
            super().commit(state)

    watching = Watching(ready_card.state)
    ready_card.applet.store = watching
    ready_card.store = watching
    for _ in range(ATC_BLOCK + 1):
        encipher(ready_card, b"x")
    # each write happened while RAM held the last value of the old block: 0, then 32
    assert seen == [0, ATC_BLOCK]
    assert watching.state.atc_reserved == 2 * ATC_BLOCK


# -- reset and restart skip the rest of the block --------------------------------------------------


def test_a_reset_skips_the_rest_of_the_block(ready_card: CardDriver) -> None:
    for value in range(1, 6):
        assert counter_of(encipher(ready_card, b"x")) == value
    ready_card.applet.reset()
    assert atc_of(ready(ready_card)) == ATC_BLOCK  # values 6..32 are skipped
    assert counter_of(encipher(ready_card, b"x")) == ATC_BLOCK + 1
    assert ready_card.state.atc_reserved == 2 * ATC_BLOCK
    for power in (ready_card.applet.power_off, ready_card.applet.power_on):
        power()
        ready(ready_card)
        reserved = ready_card.state.atc_reserved
        assert counter_of(encipher(ready_card, b"x")) == reserved + 1


def test_select_keeps_the_block(ready_card: CardDriver) -> None:
    """SELECT ends the application's session, not the card's RAM: no value is skipped."""
    encipher(ready_card, b"x")
    ready(ready_card)
    writes = ready_card.store.writes
    assert counter_of(encipher(ready_card, b"x")) == 2
    assert ready_card.store.writes == writes  # still in the first block: no write
    assert ready_card.state.atc_reserved == ATC_BLOCK


def test_a_new_card_process_starts_above_the_reservation(ready_card: CardDriver) -> None:
    used = [counter_of(encipher(ready_card, b"x")) for _ in range(3)]
    restarted = ready(CardDriver(Applet(ready_card.store), ready_card.store))
    assert atc_of(restarted) == ATC_BLOCK
    assert counter_of(encipher(restarted, b"x")) == ATC_BLOCK + 1 > max(used)


def test_a_reset_at_a_block_boundary_skips_nothing(ready_card: CardDriver) -> None:
    for _ in range(ATC_BLOCK):
        encipher(ready_card, b"x")
    ready_card.applet.reset()
    assert counter_of(encipher(ready(ready_card), b"x")) == ATC_BLOCK + 1


def test_a_failed_reservation_spends_nothing(ready_card: CardDriver) -> None:
    class Full(MemoryStore):
        def commit(self, state: PersistentState) -> None:
            raise OSError(errno.ENOSPC, "no space left on device")

    for _ in range(ATC_BLOCK):
        encipher(ready_card, b"x")
    good = ready_card.store
    ready_card.applet.store = ready_card.store = Full(good.state)
    before = snapshot(ready_card)
    assert ready_card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6581  # no box
    assert_unchanged(ready_card, before)
    ready_card.applet.store = ready_card.store = good  # space comes back
    assert counter_of(encipher(ready_card, b"x")) == ATC_BLOCK + 1
    assert ready_card.state.atc_reserved == 2 * ATC_BLOCK


# -- the top of the range -----------------------------------------------------------------------


@pytest.mark.parametrize("left", [1, 2, ATC_BLOCK - 1, ATC_BLOCK, ATC_BLOCK + 1])
def test_the_last_block_is_exact(left: int) -> None:
    """`left` values remain above the reservation: every one is used, in order, then 6985."""
    card = ready(driver_for(personalised_state().with_(atc_reserved=ATC_MAX - left)))
    writes = card.store.writes  # VERIFY's
    boxes = [counter_of(encipher(card, b"x")) for _ in range(left)]
    assert boxes == list(range(ATC_MAX - left + 1, ATC_MAX + 1))
    assert card.state.atc_reserved == ATC_MAX
    # the last block is a partial one: left <= 32 values take one reservation, 33 two
    assert card.store.writes - writes == -(-left // ATC_BLOCK)
    before = snapshot(card)
    assert card.pso(ENCIPHER, pso_data(0x80, b"one more")).sw == 0x6985
    assert_unchanged(card, before)
    assert atc_of(card) == ATC_MAX


def test_an_exhausted_card_stays_exhausted_after_a_reset() -> None:
    card = ready(driver_for(personalised_state().with_(atc_reserved=ATC_MAX)))
    assert atc_of(card) == ATC_MAX
    before = snapshot(card)
    assert card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6985
    assert_unchanged(card, before)


def test_the_value_below_the_top_after_a_reset() -> None:
    """Reset inside the last, partial block: the card starts at the reservation (the top)
    and refuses; nothing wraps round."""
    card = ready(driver_for(personalised_state().with_(atc_reserved=ATC_MAX - 10)))
    assert counter_of(encipher(card, b"x")) == ATC_MAX - 9
    card.applet.reset()
    ready(card)
    assert atc_of(card) == ATC_MAX
    assert card.pso(ENCIPHER, pso_data(0x80, b"x")).sw == 0x6985


# -- the state file ---------------------------------------------------------------------------


def state_doc(**changes: object) -> dict[str, object]:
    doc = json.loads(personalised_state().to_json())
    doc.update(changes)
    return doc


def load(doc: dict[str, object]) -> PersistentState:
    return decode_state(json.dumps(doc).encode(), None)


def test_the_file_holds_the_reservation() -> None:
    state = personalised_state().with_(atc_reserved=96)
    doc = json.loads(state.to_json())
    assert doc["format"] == STATE_FORMAT == 2
    assert doc["atc_reserved"] == 96 and "atc" not in doc
    assert load(doc) == state


def test_a_format_1_file_loads_with_its_counter_as_the_reservation() -> None:
    """Format 1's `atc` was the last value a box carried: every value up to it is spent, so
    the card goes on above it and writes format 2 at its first commit."""
    doc = state_doc(format=1, atc=41)
    del doc["atc_reserved"]
    old = load(doc)
    assert old.atc_reserved == 41
    card = ready(driver_for(old))
    assert counter_of(encipher(card, b"x")) == 42
    written = json.loads(card.state.to_json())
    assert written["format"] == 2 and written["atc_reserved"] == 41 + ATC_BLOCK
    assert "atc" not in written


def format_1(**changes: object) -> dict[str, object]:
    doc = state_doc(format=1, atc=0)
    del doc["atc_reserved"]
    doc.update(changes)
    return doc


@pytest.mark.parametrize(("doc", "reason"), [
    (state_doc(atc_reserved=-1), "'atc_reserved' is -1, expected 0..4294967295"),
    (state_doc(atc_reserved=ATC_MAX + 1), "'atc_reserved' is 4294967296, expected 0..4294967295"),
    (state_doc(atc_reserved="32"), "'atc_reserved' must be an integer, found str"),
    (state_doc(atc_reserved=True), "'atc_reserved' must be an integer, found bool"),
    (state_doc(atc_reserved=1.5), "'atc_reserved' must be an integer, found float"),
    (state_doc(atc_reserved=None), "'atc_reserved' must be an integer, found NoneType"),
    ({k: v for k, v in state_doc().items() if k != "atc_reserved"}, "'atc_reserved' is missing"),
    (state_doc(atc=5), "unknown field 'atc'"),  # format 2 has no `atc`
    (format_1(atc="x"), "'atc' must be an integer, found str"),
    (format_1(atc=ATC_MAX + 1), "'atc' is 4294967296, expected 0..4294967295"),
    ({k: v for k, v in format_1().items() if k != "atc"}, "'atc' is missing"),
    (format_1(atc_reserved=5), "unknown field 'atc_reserved'"),  # nor format 1 the new name
    (state_doc(format=3), "unknown card state format"),
    (state_doc(format=True), "unknown card state format"),
    (state_doc(format="2"), "unknown card state format"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_bad_counter_is_a_clear_error(doc: dict[str, object], reason: str) -> None:
    with pytest.raises(StateFormatError) as err:
        load(doc)
    assert str(err.value) == f"state file is not a card state: {reason}"
