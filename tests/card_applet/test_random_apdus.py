"""Random APDUs against the applet: it never raises, always answers with a status word, and
a command that fails leaves the card's persistent state (its EEPROM) exactly as it was.

The one exception is the one ISO 7816-4 and DESIGN.md require: a wrong PIN or PUK (63Cx)
spends exactly one try of the counter that command checks, and nothing else.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card_applet import keys
from card_applet.apdu import CommandApdu
from card_applet.applet import Applet
from card_applet.state import MemoryStore, PersistentState
from card_applet.sw import SW
from card_applet.tlv import tlv
from card_applet.vocabulary import AID, Ins, encode_pin
from tests.card_applet.conftest import HOLDER, ISSUER, PIN_BLOCK, PUK_BLOCK, SELLER, pair_key_of

PIN_INS = {Ins.VERIFY: "pin_tries", Ins.CHANGE_REFERENCE_DATA: "pin_tries",
           Ins.RESET_RETRY_COUNTER: "puk_tries"}
KNOWN_SW = {int(sw) for sw in SW} - {SW.BYTES_REMAINING, SW.VERIFY_FAILED, SW.UNKNOWN,
                                      SW.WRONG_LE, SW.MEMORY_FAILURE}

SELLER_BOX = keys.seal(
    keys.seal_key(pair_key_of(HOLDER, SELLER), SELLER.encode(), HOLDER.encode(), b""),
    5, b"from the seller", b"", nonce=bytes(12))

# -- strategies -------------------------------------------------------------------------------


def pso_fields(main_tag: int, value: bytes, aad: bytes, context: bytes) -> bytes:
    return (tlv(main_tag, value) + (tlv(0x81, aad) if aad else b"")
            + (tlv(0x82, context) if context else b""))


def store_data_payload(tag: int, value: bytes) -> bytes:
    return tlv(tag, value) + bytes(16)  # a (wrong) C-MAC



byte = st.integers(0, 255)
classes = st.sampled_from([0x00, 0x10, 0x80, 0x90, 0x0C, 0x01, 0x84, 0xFF, 0x20, 0x40]) | byte
instructions = st.sampled_from([int(i) for i in Ins]) | byte
params = st.sampled_from([0x00, 0x01, 0x02, 0x04, 0x05, 0x0C, 0x41, 0x80, 0x81, 0x86, 0xA4,
                          0xB8, 0xC0, 0xC1, 0xC3, 0xC6, 0xC7, 0xDF, 0xFF]) | byte
pin_blocks = st.sampled_from([PIN_BLOCK, PUK_BLOCK, encode_pin("0000")]) | st.text(
    "0123456789", min_size=4, max_size=8).map(encode_pin) | st.binary(
    min_size=8, max_size=8)
peer_ids = st.sampled_from([SELLER.encode(), ISSUER.encode(), HOLDER.encode(), b"", b"\xff",
                            b"s" * 65]) | st.binary(max_size=70)
pso_values = st.sampled_from([SELLER_BOX, SELLER_BOX[:-1], b""]) | st.binary(max_size=300)
data_fields = st.one_of(
    st.binary(max_size=300),
    pin_blocks,
    st.tuples(pin_blocks, pin_blocks).map(b"".join),
    peer_ids.map(lambda peer: tlv(0x83, peer)),
    st.builds(pso_fields, st.sampled_from([0x80, 0x86]), pso_values, st.binary(max_size=20),
              st.binary(max_size=70)),
    st.builds(store_data_payload, st.sampled_from([0xDF10, 0xDF11, 0xDF12, 0xDF13]),
              st.binary(max_size=140)),
    st.integers(1, len(AID) + 1).map(lambda n: (AID + b"\x00")[:n]),
)
lengths = st.none() | st.sampled_from([1, 7, 8, 16, 255, 256, 65536]) | st.integers(1, 65536)
structured = st.builds(CommandApdu, classes, instructions, params, params, data_fields, lengths,
                       st.booleans()).map(CommandApdu.to_bytes)
SELECT = CommandApdu(0x00, Ins.SELECT, 0x04, 0x00, AID, 256).to_bytes()
VERIFY = CommandApdu(0x00, Ins.VERIFY, 0x00, 0x81, PIN_BLOCK).to_bytes()
SET_SELLER = CommandApdu(0x00, Ins.MANAGE_SECURITY_ENVIRONMENT, 0x41, 0xA4,
                         tlv(0x83, SELLER.encode())).to_bytes()
INITIALIZE_UPDATE = CommandApdu(0x80, Ins.INITIALIZE_UPDATE, 0x00, 0x00, bytes(8), 256).to_bytes()
# where a program starts: nothing, selected, PIN verified, peer set, perso session open
preludes = st.sampled_from([[], [SELECT], [SELECT, VERIFY], [SELECT, VERIFY, SET_SELLER],
                            [SELECT, SET_SELLER], [SELECT, INITIALIZE_UPDATE]])
useful = st.sampled_from([
    CommandApdu(0x00, Ins.SELECT, 0x04, 0x0C, AID[:5]),
    CommandApdu(0x00, Ins.VERIFY, 0x00, 0x81, PIN_BLOCK),
    CommandApdu(0x00, Ins.VERIFY, 0x00, 0x81, encode_pin("0000")),
    CommandApdu(0x00, Ins.VERIFY, 0x00, 0x81),
    CommandApdu(0x00, Ins.CHANGE_REFERENCE_DATA, 0x00, 0x81, encode_pin("9999") * 2),
    CommandApdu(0x00, Ins.RESET_RETRY_COUNTER, 0x01, 0x81, encode_pin("00000000")),
    CommandApdu(0x00, Ins.RESET_RETRY_COUNTER, 0x00, 0x81, PUK_BLOCK + PIN_BLOCK),
    CommandApdu(0x00, Ins.MANAGE_SECURITY_ENVIRONMENT, 0x41, 0xA4, tlv(0x83, ISSUER.encode())),
    CommandApdu(0x00, Ins.GET_CHALLENGE, 0x00, 0x00, le=16),
    CommandApdu(0x00, Ins.GET_DATA, 0x00, 0xC0, le=10),
    CommandApdu(0x00, Ins.PERFORM_SECURITY_OPERATION, 0x86, 0x80, tlv(0x80, bytes(300)), 16),
    CommandApdu(0x00, Ins.PERFORM_SECURITY_OPERATION, 0x86, 0x80, tlv(0x80, b"abc"), 256),
    CommandApdu(0x00, Ins.PERFORM_SECURITY_OPERATION, 0x80, 0x86, tlv(0x86, SELLER_BOX), 256),
    CommandApdu(0x10, Ins.PERFORM_SECURITY_OPERATION, 0x86, 0x80, tlv(0x80, b"abc")[:3]),
    CommandApdu(0x00, Ins.INTERNAL_AUTHENTICATE, 0x00, 0x00, bytes(16), 256),
    CommandApdu(0x00, Ins.EXTERNAL_AUTHENTICATE, 0x00, 0x00, bytes(16)),
    CommandApdu(0x00, Ins.GET_RESPONSE, 0x00, 0x00, le=8),
    CommandApdu(0x80, Ins.STORE_DATA, 0x00, 0x00, tlv(0xDF12, PIN_BLOCK) + bytes(16)),
    CommandApdu(0x80, Ins.SET_STATUS, 0x00, 0x05, bytes(16)),
]).map(CommandApdu.to_bytes) | st.sampled_from([SELECT, VERIFY, SET_SELLER, INITIALIZE_UPDATE])
garbage = st.binary(max_size=300) | st.tuples(classes, instructions, st.binary(max_size=12)).map(
    lambda t: bytes(t[:2]) + t[2])
programs = st.lists(useful | structured | garbage, min_size=1, max_size=8)

# -- the invariant ----------------------------------------------------------------------------


def run_checked(applet: Applet, store: MemoryStore, raw: bytes) -> None:
    before, writes = store.state, store.writes
    out = applet.process(raw)
    assert isinstance(out, bytes) and len(out) >= 2
    sw = int.from_bytes(out[-2:], "big")
    assert sw != SW.UNKNOWN, f"internal error on {raw.hex()}"
    if sw == SW.OK or sw >> 8 == 0x61:
        return
    assert len(out) == 2, "an error status carries no data"
    tries_field = PIN_INS.get(raw[1]) if len(raw) >= 4 and not raw[0] & 0x80 else None
    if sw & 0xFFF0 == SW.VERIFY_FAILED and store.state != before:
        assert tries_field is not None, f"{raw.hex()} answered {sw:04X} and changed the state"
        spent = getattr(before, tries_field) - 1
        assert store.state == before.with_(**{tries_field: spent})
        assert sw == SW.VERIFY_FAILED | spent
        assert store.writes == writes + 1
        return
    assert sw in KNOWN_SW or sw & 0xFFF0 == SW.VERIFY_FAILED, f"{sw:04X}"
    assert store.state == before, f"{raw.hex()} answered {sw:04X} and changed the state"
    assert store.writes == writes


def run_program(template: PersistentState, prelude: list[bytes], program: list[bytes]) -> None:
    store = MemoryStore(template)
    applet = Applet(store)
    for raw in prelude + program:
        run_checked(applet, store, raw)


FAST = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@settings(max_examples=2000, **FAST)
@given(prelude=preludes, program=programs)
def test_random_apdus_personalised_card(operational_template: PersistentState,
                                        prelude: list[bytes], program: list[bytes]) -> None:
    run_program(operational_template, prelude, program)


@settings(max_examples=1000, **FAST)
@given(prelude=preludes, program=programs)
def test_random_apdus_blank_card(blank_template: PersistentState, prelude: list[bytes],
                                 program: list[bytes]) -> None:
    run_program(blank_template, prelude, program)


@settings(max_examples=1000, **FAST)
@given(prelude=preludes, program=st.lists(st.binary(max_size=600), min_size=1, max_size=6))
def test_random_bytes(operational_template: PersistentState, blank_template: PersistentState,
                      prelude: list[bytes], program: list[bytes]) -> None:
    run_program(operational_template, prelude, program)
    run_program(blank_template, prelude, program)


@settings(max_examples=300, **FAST)
@given(program=st.lists(useful | structured, min_size=1, max_size=12))
def test_pin_tries_only_ever_fall_by_one(operational_template: PersistentState,
                                         program: list[bytes]) -> None:
    """Whatever the sequence, the counters stay within 0..3 and every step is -1, 0, or a
    reset to 3 that only a 9000 can bring."""
    store = MemoryStore(operational_template)
    applet = Applet(store)
    applet.process(SELECT)
    for raw in program:
        before = store.state
        sw = int.from_bytes(applet.process(raw)[-2:], "big")
        for name in ("pin_tries", "puk_tries"):
            old, new = getattr(before, name), getattr(store.state, name)
            assert 0 <= new <= 3
            assert new in (old, old - 1) or (new == 3 and sw == SW.OK)
