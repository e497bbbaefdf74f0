"""The APDU codec (ISO 7816-3 12.1.3 / 7816-4 5.1 case analysis), response APDUs, BER-TLV and
status words."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card_applet.apdu import ApduFormatError, CommandApdu, ResponseApdu
from card_applet.applet import Applet
from card_applet.errors import NettxError
from card_applet.state import MemoryStore, manufacture
from card_applet.sw import SW, CardError, describe, verify_failed
from card_applet.tlv import Tlv, TlvError, encode_length, encode_tag, parse, parse_unique, tlv
from tests.card_applet.conftest import h

# -- decoding each case -----------------------------------------------------------------------


def test_case_1() -> None:
    assert CommandApdu.from_bytes(h("00 A4 04 00")) == CommandApdu(0x00, 0xA4, 0x04, 0x00)


def test_case_2_short() -> None:
    assert CommandApdu.from_bytes(h("00 84 00 00 08")) == CommandApdu(0, 0x84, 0, 0, le=8)


def test_case_2_short_le_00_means_256() -> None:
    cmd = CommandApdu.from_bytes(h("00 84 00 00 00"))
    assert cmd.le == 256
    assert cmd.extended is False


def test_case_3_short() -> None:
    cmd = CommandApdu.from_bytes(h("00 20 00 81 03 31 32 33"))
    assert cmd == CommandApdu(0x00, 0x20, 0x00, 0x81, b"123")


def test_case_3_short_255_bytes() -> None:
    cmd = CommandApdu.from_bytes(h("00 2A 86 80 FF") + bytes(255))
    assert cmd == CommandApdu(0x00, 0x2A, 0x86, 0x80, bytes(255))


def test_case_4_short() -> None:
    cmd = CommandApdu.from_bytes(h("00 A4 04 00 02 F0 45 10"))
    assert cmd == CommandApdu(0x00, 0xA4, 0x04, 0x00, h("F0 45"), 0x10)


def test_case_4_short_le_00_means_256() -> None:
    cmd = CommandApdu.from_bytes(h("00 A4 04 00 01 F0 00"))
    assert (cmd.data, cmd.le, cmd.extended) == (h("F0"), 256, False)


def test_case_2_extended() -> None:
    cmd = CommandApdu.from_bytes(h("00 84 00 00 00 01 00"))
    assert cmd == CommandApdu(0, 0x84, 0, 0, le=256, extended=True)


def test_case_2_extended_le_0000_means_65536() -> None:
    cmd = CommandApdu.from_bytes(h("00 84 00 00 00 00 00"))
    assert cmd == CommandApdu(0, 0x84, 0, 0, le=65536, extended=True)


def test_case_3_extended() -> None:
    cmd = CommandApdu.from_bytes(h("00 2A 86 80 00 01 2C") + bytes(300))
    assert cmd == CommandApdu(0, 0x2A, 0x86, 0x80, bytes(300), extended=True)


def test_case_3_extended_with_short_data() -> None:
    cmd = CommandApdu.from_bytes(h("00 20 00 81 00 00 02 31 32"))
    assert cmd == CommandApdu(0, 0x20, 0x00, 0x81, b"12", extended=True)


def test_case_4_extended() -> None:
    cmd = CommandApdu.from_bytes(h("00 2A 86 80 00 01 00") + bytes(256) + h("10 00"))
    assert cmd == CommandApdu(0, 0x2A, 0x86, 0x80, bytes(256), 0x1000, extended=True)


def test_case_4_extended_le_0000_means_65536() -> None:
    cmd = CommandApdu.from_bytes(h("00 2A 86 80 00 00 01 AA 00 00"))
    assert cmd == CommandApdu(0, 0x2A, 0x86, 0x80, h("AA"), 65536, extended=True)


def test_case_3_extended_maximum() -> None:
    cmd = CommandApdu.from_bytes(h("00 2A 86 80 00 FF FF") + bytes(65535))
    assert len(cmd.data) == 65535
    assert cmd.le is None


# -- malformed shapes -------------------------------------------------------------------------

MALFORMED = {
    "empty": "",
    "one byte": "00",
    "three bytes": "00 A4 04",
    "short Lc longer than data": "00 20 00 81 05 31 32 33 34",
    "short Lc shorter than data": "00 20 00 81 02 31 32 33 34",
    "short Lc two bytes over data": "00 20 00 81 01 31 32 33",
    "extended marker only": "00 84 00 00 00 01",
    "extended Lc = 0 with Le": "00 84 00 00 00 00 00 00",
    "extended Lc = 0 with data": "00 2A 86 80 00 00 00 AA",
    "extended Lc = 0, five-byte body": "00 2A 86 80 00 00 00 00 00",
    "extended Lc longer than data": "00 2A 86 80 00 00 03 AA BB",
    "extended Lc shorter than data": "00 2A 86 80 00 00 01 AA BB",
    "extended one-byte Le": "00 2A 86 80 00 00 01 AA 00",
    "extended three-byte Le": "00 2A 86 80 00 00 01 AA 00 00 00",
}


def card_answer(raw: bytes) -> int:
    """The status word a blank card answers `raw` with: how the card maps a format error."""
    return int.from_bytes(Applet(MemoryStore(manufacture(bytes(32)))).process(raw)[-2:], "big")


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_is_wrong_length(raw: str) -> None:
    with pytest.raises(ApduFormatError) as caught:
        CommandApdu.from_bytes(h(raw))
    assert isinstance(caught.value, NettxError)  # the project's one root, not the card's
    assert not isinstance(caught.value, CardError)
    assert card_answer(h(raw)) == SW.WRONG_LENGTH == 0x6700


def test_short_lc_255_with_258_bytes_of_body() -> None:
    raw = h("00 2A 86 80 FF") + bytes(256 + 2)
    with pytest.raises(ApduFormatError):
        CommandApdu.from_bytes(raw)
    assert card_answer(raw) == 0x6700


# -- encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("cmd", "raw"), [
    (CommandApdu(0x00, 0xA4, 0x04, 0x00), "00 A4 04 00"),
    (CommandApdu(0x00, 0x84, 0, 0, le=8), "00 84 00 00 08"),
    (CommandApdu(0x00, 0x84, 0, 0, le=256), "00 84 00 00 00"),
    (CommandApdu(0x00, 0x20, 0, 0x81, b"12"), "00 20 00 81 02 31 32"),
    (CommandApdu(0x00, 0xA4, 4, 0, h("F0 45"), 256), "00 A4 04 00 02 F0 45 00"),
    (CommandApdu(0x00, 0x84, 0, 0, le=257), "00 84 00 00 00 01 01"),
    (CommandApdu(0x00, 0x84, 0, 0, le=65536), "00 84 00 00 00 00 00"),
    (CommandApdu(0x00, 0x84, 0, 0, le=8, extended=True), "00 84 00 00 00 00 08"),
    (CommandApdu(0x00, 0x20, 0, 0x81, b"1", extended=True), "00 20 00 81 00 00 01 31"),
    (CommandApdu(0x00, 0x2A, 0x86, 0x80, h("AA"), 65536, True),
     "00 2A 86 80 00 00 01 AA 00 00"),
    (CommandApdu(0x00, 0x2A, 0x86, 0x80, h("AA"), 256, True), "00 2A 86 80 00 00 01 AA 01 00"),
    (CommandApdu(0x00, 0xA4, 0x04, 0x00, extended=True), "00 A4 04 00"),
])
def test_to_bytes(cmd: CommandApdu, raw: str) -> None:
    assert cmd.to_bytes() == h(raw)


def test_data_over_255_goes_extended_by_itself() -> None:
    cmd = CommandApdu(0x00, 0x2A, 0x86, 0x80, bytes(256), 256)
    assert cmd.needs_extended
    assert cmd.to_bytes() == h("00 2A 86 80 00 01 00") + bytes(256) + h("01 00")


def test_needs_extended_bounds() -> None:
    assert not CommandApdu(0, 0, 0, 0, bytes(255), 256).needs_extended
    assert CommandApdu(0, 0, 0, 0, bytes(256)).needs_extended
    assert CommandApdu(0, 0, 0, 0, le=257).needs_extended


@pytest.mark.parametrize(("cla", "chained"), [(0x00, False), (0x10, True), (0x80, False),
                                              (0x90, True), (0xFF, False)])
def test_is_chained(cla: int, chained: bool) -> None:
    assert CommandApdu(cla, 0xA4, 0, 0).is_chained is chained


@pytest.mark.parametrize("kwargs", [
    {"cla": 0x100}, {"ins": -1}, {"p1": 256}, {"p2": 0x1FF}, {"le": 0}, {"le": 65537},
    {"data": bytes(65536)},
])
def test_out_of_range_fields_rejected(kwargs: dict) -> None:
    fields = {"cla": 0, "ins": 0xA4, "p1": 4, "p2": 0} | kwargs
    with pytest.raises(ValueError):
        CommandApdu(**fields)


# -- round trips ------------------------------------------------------------------------------

byte = st.integers(0, 255)


@st.composite
def commands(draw: st.DrawFn) -> CommandApdu:
    extended = draw(st.booleans())
    data = draw(st.binary(max_size=600 if extended else 255))
    le_max = 65536 if extended else 256
    le = draw(st.none() | st.integers(1, le_max))
    return CommandApdu(draw(byte), draw(byte), draw(byte), draw(byte), data, le, extended)


@settings(max_examples=500)
@given(commands())
def test_command_round_trip(cmd: CommandApdu) -> None:
    raw = cmd.to_bytes()
    back = CommandApdu.from_bytes(raw)
    travelled_extended = (cmd.extended or cmd.needs_extended) and (
        bool(cmd.data) or cmd.le is not None)
    assert back == CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, cmd.le,
                               travelled_extended)
    assert back.to_bytes() == raw


@settings(max_examples=1000)
@given(st.binary(min_size=0, max_size=300) | st.builds(
    lambda head, lc, rest: head + lc + rest, st.binary(min_size=5, max_size=5).map(
        lambda b: b[:4] + b"\x00"), st.binary(min_size=2, max_size=2), st.binary(max_size=12)))
def test_any_bytes_parse_exactly_or_are_wrong_length(raw: bytes) -> None:
    try:
        cmd = CommandApdu.from_bytes(raw)
    except ApduFormatError:
        # in a class the card accepts (malformed or not does not depend on CLA)
        assert card_answer(b"\x00" + raw[1:]) == SW.WRONG_LENGTH
        return
    assert cmd.to_bytes() == raw


# -- response APDUs ---------------------------------------------------------------------------


def test_response_with_data() -> None:
    resp = ResponseApdu.from_bytes(h("01 02 03 61 10"))
    assert resp == ResponseApdu(h("01 02 03"), 0x6110)
    assert (resp.sw1, resp.sw2) == (0x61, 0x10)
    assert resp.to_bytes() == h("01 02 03 61 10")


def test_response_status_only() -> None:
    resp = ResponseApdu.from_bytes(h("90 00"))
    assert resp == ResponseApdu(b"", 0x9000)
    assert (resp.sw1, resp.sw2) == (0x90, 0x00)


@pytest.mark.parametrize("raw", ["", "90"])
def test_response_without_status_word(raw: str) -> None:
    with pytest.raises(ValueError, match="no status word"):
        ResponseApdu.from_bytes(h(raw))


@given(st.binary(), st.integers(0, 0xFFFF))
def test_response_round_trip(data: bytes, sw: int) -> None:
    resp = ResponseApdu(data, sw)
    assert ResponseApdu.from_bytes(resp.to_bytes()) == resp
    assert resp.to_bytes() == data + sw.to_bytes(2, "big")


# -- status words -----------------------------------------------------------------------------


def test_verify_failed_status_words() -> None:
    assert [verify_failed(n) for n in (0, 1, 2, 3, 15, 16)] == [
        0x63C0, 0x63C1, 0x63C2, 0x63C3, 0x63CF, 0x63CF]


@pytest.mark.parametrize(("sw", "meaning"), [
    (0x9000, "success"),
    (0x6110, "16 more bytes available (GET RESPONSE)"),
    (0x6100, "256 more bytes available (GET RESPONSE)"),
    (0x6C08, "wrong Le: re-issue with Le = 8"),
    (0x63C2, "verification failed, 2 tries left"),
    (0x63C1, "verification failed, 1 try left"),
    (0x6883, "last command of the chain expected"),
    (0x6F01, "unknown status"),
])
def test_describe(sw: int, meaning: str) -> None:
    assert describe(sw) == meaning


def test_card_error_carries_the_status_word() -> None:
    err = CardError(SW.WRONG_DATA)
    assert err.sw == 0x6A80
    assert str(err) == "6A80 incorrect parameters in the data field"


# -- BER-TLV ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("tag", "raw"), [(0x80, "80"), (0xC1, "C1"), (0x00, "00"),
                                          (0xDF11, "DF 11"), (0x5F20, "5F 20")])
def test_encode_tag(tag: int, raw: str) -> None:
    assert encode_tag(tag) == h(raw)


@pytest.mark.parametrize(("n", "raw"), [(0, "00"), (0x7F, "7F"), (0x80, "81 80"),
                                        (0xFF, "81 FF"), (0x100, "82 01 00"),
                                        (0xFFFF, "82 FF FF")])
def test_encode_length(n: int, raw: str) -> None:
    assert encode_length(n) == h(raw)


def test_encode_length_over_65535() -> None:
    with pytest.raises(TlvError):
        encode_length(0x10000)
    with pytest.raises(TlvError):
        tlv(0x80, bytes(0x10000))


def test_tlv_encodes() -> None:
    assert tlv(0x83, b"ab") == h("83 02 61 62")
    assert tlv(0xDF12, b"") == h("DF 12 00")
    assert tlv(0x80, bytes(200)) == h("80 81 C8") + bytes(200)
    assert Tlv(0x86, bytes(300)).to_bytes() == h("86 82 01 2C") + bytes(300)


def test_parse_flat_list() -> None:
    raw = h("80 01 AA DF 11 02 BB CC 81 81 80") + bytes(0x80) + h("82 82 01 00") + bytes(256)
    assert parse(raw) == [Tlv(0x80, h("AA")), Tlv(0xDF11, h("BB CC")),
                          Tlv(0x81, bytes(0x80)), Tlv(0x82, bytes(256))]


def test_parse_empty_and_zero_length() -> None:
    assert parse(b"") == []
    assert parse(h("80 00 00 00")) == [Tlv(0x80, b""), Tlv(0x00, b"")]


def test_parse_accepts_non_minimal_long_length() -> None:
    assert parse(h("80 81 01 AA 81 82 00 01 BB")) == [Tlv(0x80, h("AA")), Tlv(0x81, h("BB"))]


@pytest.mark.parametrize(("raw", "message"), [
    ("DF", "unsupported tag"),
    ("DF 81 01 00", "unsupported tag"),
    ("80", "missing length"),
    ("DF 11", "missing length"),
    ("80 81", "truncated length"),
    ("80 82 01", "truncated length"),
    ("80 80", "unsupported length form"),
    ("80 83 00 00 01 AA", "unsupported length form"),
    ("80 84 00 00 00 01 AA", "unsupported length form"),
    ("80 02 AA", "value runs past the end"),
    ("80 81 02 AA", "value runs past the end"),
    ("80 01 AA 81 03 BB", "value runs past the end"),
])
def test_parse_errors(raw: str, message: str) -> None:
    with pytest.raises(TlvError, match=message):
        parse(h(raw))


def test_tlv_error_is_a_value_error() -> None:
    assert issubclass(TlvError, ValueError)


def test_parse_unique() -> None:
    assert parse_unique(h("80 01 AA 82 00"), {0x80, 0x81, 0x82}) == {0x80: h("AA"), 0x82: b""}


@pytest.mark.parametrize("raw", ["80 01 AA 80 01 BB", "83 00", "80 00 DF 11 00"])
def test_parse_unique_rejects_repeated_or_unexpected(raw: str) -> None:
    with pytest.raises(TlvError, match="unexpected or repeated tag"):
        parse_unique(h(raw), {0x80, 0x81})


one_byte_tags = st.integers(0, 0xFF).filter(lambda t: t & 0x1F != 0x1F)
two_byte_tags = st.builds(lambda first, second: (first << 8) | second,
                          st.integers(0, 7).map(lambda n: (n << 5) | 0x1F), st.integers(0, 0x7F))


@settings(max_examples=300)
@given(st.lists(st.builds(Tlv, one_byte_tags | two_byte_tags, st.binary(max_size=300)),
                max_size=6))
def test_tlv_round_trip(items: list[Tlv]) -> None:
    assert parse(b"".join(item.to_bytes() for item in items)) == items
