"""Hypothesis state machine over command sequences: select, VERIFY right and wrong, the
status query, MSE (set peer), ENCIPHER and DECIPHER, command chains opened and interrupted
midway, GET RESPONSE, unblock, and resets at any point.

The model tracks what ISO 7816-4 and docs/apdu.md promise: the PIN try counter (63Cx, 6983),
the verification state, the selected application and peer, the open chain (6883 for any other
command), and the transaction counter, which only ever goes up and is in every box.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from card_applet.applet import Applet
from card_applet.state import PIN_MAX_TRIES, PUK_MAX_TRIES, MemoryStore
from card_applet.tlv import tlv
from card_applet.vocabulary import ATC_BLOCK, encode_pin
from tests.fuzz.harness import MSE, OPERATIONAL, PUK, SELECT, VERIFY

H = bytes.fromhex
WRONG_VERIFY = H("0020008108") + encode_pin("9999")
STATUS_QUERY = H("00200081")
UNBLOCK = H("002C018108") + encode_pin(PUK)
PSO_ENCIPHER = (0x00, 0x2A, 0x86, 0x80)
CHAIN_LINK = H("102A868003800341")  # "80 03 41" ...
CHAIN_LAST = H("002A8680024243") + b"\x00"  # ... "42 43": together the plain value "ABC"
GET_ATC_SHORT = H("00CA00C602")
GET_RESPONSE_2 = H("00C0000002")


def sw(response: bytes) -> int:
    return int.from_bytes(response[-2:], "big")


class CardModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore(OPERATIONAL)
        self.applet = Applet(self.store)
        self.selected = self.verified = self.peer = False
        self.tries = PIN_MAX_TRIES
        self.atc = 0  # the last counter value spent (GET DATA ATC)
        self.reserved = 0  # the end of the block reserved in EEPROM
        self.boxes: set[int] = set()  # every counter value a box carried
        self.chain: tuple[int, int, int, int] | None = None
        self.links = 0  # links of the open chain
        self.highest_reserved = 0

    # -- the one way commands go out ----------------------------------------------------------

    def send(self, apdu: bytes) -> bytes | None:
        """Send; if a chain is open and this command is not its next link, the card must
        refuse it with 6883 and drop the chain: then None (the command did not run)."""
        header = (apdu[0] & ~0x10, apdu[1], apdu[2], apdu[3])
        response = self.applet.process(apdu)
        if self.chain is not None and header != self.chain:
            assert sw(response) == 0x6883, response.hex()
            self.chain, self.links = None, 0
            return None
        return response

    def power_reset(self) -> None:
        self.selected = self.verified = self.peer = False
        self.chain, self.links = None, 0

    # -- rules ----------------------------------------------------------------------------------

    @rule()
    def reset(self) -> None:
        self.applet.reset()
        self.atc = self.reserved  # RAM is gone: the rest of the block is skipped
        self.power_reset()

    @rule()
    def select(self) -> None:
        response = self.send(SELECT)
        if response is None:
            return
        assert sw(response) == 0x9000
        self.power_reset()
        self.selected = True

    def _not_selected(self, response: bytes) -> bool:
        if not self.selected:
            assert sw(response) == 0x6985, response.hex()
            self.chain, self.links = None, 0
            return True
        return False

    @rule()
    def verify_right(self) -> None:
        response = self.send(VERIFY)
        if response is None or self._not_selected(response):
            return
        if self.tries == 0:
            assert sw(response) == 0x6983
            self.verified = False
            return
        assert sw(response) == 0x9000
        self.tries, self.verified = PIN_MAX_TRIES, True

    @rule()
    def verify_wrong(self) -> None:
        response = self.send(WRONG_VERIFY)
        if response is None or self._not_selected(response):
            return
        self.verified = False
        if self.tries == 0:
            assert sw(response) == 0x6983
            return
        self.tries -= 1
        assert sw(response) == 0x63C0 | self.tries

    @rule()
    def status_query(self) -> None:
        response = self.send(STATUS_QUERY)
        if response is None or self._not_selected(response):
            return
        if self.tries == 0:
            assert sw(response) == 0x6983
        elif self.verified:
            assert sw(response) == 0x9000
        else:
            assert sw(response) == 0x63C0 | self.tries

    @rule()
    def unblock(self) -> None:
        response = self.send(UNBLOCK)
        if response is None or self._not_selected(response):
            return
        assert sw(response) == 0x9000
        self.tries, self.verified = PIN_MAX_TRIES, False

    @rule()
    def set_peer(self) -> None:
        response = self.send(MSE)
        if response is None or self._not_selected(response):
            return
        assert sw(response) == 0x9000
        self.peer = True

    def _pso_refusal(self, response: bytes) -> bool:
        if self._not_selected(response):
            return True
        if not self.verified:
            assert sw(response) == 0x6982, response.hex()
            return True
        if not self.peer:
            assert sw(response) == 0x6985, response.hex()
            return True
        return False

    def _check_box(self, response: bytes) -> None:
        assert sw(response) == 0x9000, response.hex()
        self.atc += 1
        if self.atc > self.reserved:
            self.reserved += ATC_BLOCK
        assert int.from_bytes(response[1:5], "big") == self.atc  # the counter is in the box
        assert self.atc not in self.boxes
        self.boxes.add(self.atc)

    @precondition(lambda self: self.chain is None)  # else it would be the chain's last link
    @rule(plain=st.binary(max_size=300), aad=st.binary(max_size=40))
    def encipher(self, plain: bytes, aad: bytes) -> None:
        data = tlv(0x80, plain) + (tlv(0x81, aad) if aad else b"")
        apdu = bytes(PSO_ENCIPHER) + b"\x00" + len(data).to_bytes(2, "big") + data + b"\x00\x00"
        response = self.send(apdu)
        if response is None or self._pso_refusal(response):
            return
        self._check_box(response)

    @rule(box=st.binary(max_size=80))
    def decipher_forged(self, box: bytes) -> None:
        data = tlv(0x86, box)
        response = self.send(H("002A8086") + bytes((len(data),)) + data + b"\x00")
        if response is None or self._pso_refusal(response):
            return
        assert sw(response) in (0x6988, 0x6A80), response.hex()  # never opens a forgery

    @rule()
    def open_chain(self) -> None:
        response = self.send(CHAIN_LINK)
        if response is None or self._not_selected(response):
            return
        assert sw(response) == 0x9000
        self.chain = PSO_ENCIPHER
        self.links += 1

    @rule()
    def last_link(self) -> None:
        links = self.links if self.chain is not None else 0
        response = self.send(CHAIN_LAST)
        self.chain, self.links = None, 0
        if response is None or self._pso_refusal(response):
            return
        if links == 1:
            self._check_box(response)
        else:  # "42 43" alone, or after two links, is no TLV list: nothing stale is joined
            assert sw(response) == 0x6A80, response.hex()

    @rule()
    def atc_through_get_response(self) -> None:
        response = self.send(GET_ATC_SHORT)
        if response is None or self._not_selected(response):
            return
        assert sw(response) == 0x6102 and len(response) == 4
        rest = self.applet.process(GET_RESPONSE_2)
        assert sw(rest) == 0x9000
        assert int.from_bytes(response[:2] + rest[:2], "big") == self.atc

    @precondition(lambda self: self.selected and self.chain is None)
    @rule()
    def get_response_with_nothing_pending(self) -> None:
        assert sw(self.applet.process(GET_RESPONSE_2)) == 0x6985

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def persistent_state_matches_the_model(self) -> None:
        state = self.store.state
        assert state.pin_tries == self.tries
        assert state.puk_tries == PUK_MAX_TRIES
        assert state.atc_reserved == self.reserved
        assert self.applet.atc == self.atc <= state.atc_reserved  # no box beyond the block
        assert state.atc_reserved >= self.highest_reserved  # monotonic, whatever happened
        self.highest_reserved = state.atc_reserved
        assert (state.holder_id, state.row, state.pin_hash) == (
            OPERATIONAL.holder_id, OPERATIONAL.row, OPERATIONAL.pin_hash)

    @invariant()
    def volatile_state_matches_the_model(self) -> None:
        v = self.applet.v
        assert v.selected == self.selected
        assert v.pin_verified == self.verified
        assert (v.peer is not None) == self.peer
        assert v.chain_header == (None if self.chain is None else self.chain)


CardModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                       deadline=None)
test_card_model = CardModel.TestCase
