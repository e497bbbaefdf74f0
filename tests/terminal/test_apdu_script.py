"""terminal/apdu_script: scriptor-style steps, expected status words, and the 61xx / 6Cxx
conventions of `exchange`, against a scripted reader that records what it was sent."""

from __future__ import annotations

import pytest

from card_applet.apdu import CommandApdu
from terminal.apdu_script import (
    Expectation,
    ScriptError,
    StepKind,
    exchange,
    explain_malformed,
    parse_hex,
    parse_script,
    parse_step,
)


class ScriptedReader:
    """Answers each transmit with the next canned response; keeps the commands."""

    name = "scripted"
    extended_length = True

    def __init__(self, *responses: str) -> None:
        self.responses = [bytes.fromhex(r) for r in responses]
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.responses.pop(0)


def test_hex_takes_spaces_and_colons() -> None:
    assert parse_hex("00 a4:04 00") == bytes.fromhex("00A40400")


@pytest.mark.parametrize(("text", "reason"), [
    ("00A4zz", "'z' is not a hex digit"),
    ("00A404000", "odd number of hex digits (9)"),
])
def test_hex_that_is_not_bytes_says_why(text: str, reason: str) -> None:
    with pytest.raises(ScriptError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_step(text)


@pytest.mark.parametrize(("raw", "reason"), [
    ("00A4", "2 bytes: a command APDU starts with 4"),
    ("00A404000A01", "short Lc says 10 data bytes, so the body after the header is 11"),
    ("00A4040000AA", "a body starting 00 is extended length"),
    ("00A40400000000AA", "extended Lc of 0000"),
    ("00A40400000005AABB", "extended Lc says 5 data bytes"),
])
def test_an_apdu_of_no_iso_case_gets_the_reason(raw: str, reason: str) -> None:
    assert reason in explain_malformed(bytes.fromhex(raw))
    with pytest.raises(ScriptError, match="is not a command APDU: " + reason[:12]):
        parse_step(raw)


def test_every_valid_case_parses() -> None:
    for raw in ("00A40400", "00CA00C200", "00A404000AF0455030373931393031",
                "00A404000AF045503037393139303100", "00CA00C2000100", "0020008100000401020304"):
        step = parse_step(raw)
        assert step is not None and step.command is not None
        assert step.command.to_bytes() == bytes.fromhex(raw)


def test_expectations_with_wildcards_and_alternatives() -> None:
    assert Expectation().accepts(0x9000) and not Expectation().accepts(0x6A82)
    assert Expectation.parse("63CX").accepts(0x63C2)
    assert not Expectation.parse("63CX").accepts(0x6983)
    assert Expectation.parse("9000, 6a82").accepts(0x6A82)
    assert Expectation.parse("any").accepts(0x6F00)
    with pytest.raises(ScriptError, match="four hex digits"):
        Expectation.parse("900")


def test_script_format_comments_reset_exit_and_line_numbers() -> None:
    steps = parse_script("# select\n00A40400 = 9000\n\nreset\n00 CA 00 C2 00 # serial\nexit\n",
                         "s.apdu")
    assert [s.kind for s in steps] == [StepKind.COMMAND, StepKind.RESET, StepKind.COMMAND,
                                       StepKind.EXIT]
    with pytest.raises(ScriptError, match=r"^s\.apdu:2: '00A4' is not a command APDU"):
        parse_script("# ok\n00A4\n", "s.apdu")


def test_61xx_is_collected_with_get_response_on_the_same_channel() -> None:
    reader = ScriptedReader("AABB6102", "CCDD6101", "EE9000")
    resp = exchange(reader, CommandApdu(0x01, 0xA4, 4, 0, b"\xF0"))  # logical channel 1
    assert resp.data == bytes.fromhex("AABBCCDDEE") and resp.sw == 0x9000
    assert reader.sent[1:] == [bytes.fromhex("01C0000002"), bytes.fromhex("01C0000001")]


def test_61xx_on_a_further_inter_industry_channel_stays_on_that_channel() -> None:
    # CLA 41: logical channel 5 (ISO 7816-4 5.4.1), not channel 1 as CLA b2-b1 alone would say
    reader = ScriptedReader("AA6101", "BB9000")
    resp = exchange(reader, CommandApdu(0x41, 0xCA, 0, 0xC2, le=256))
    assert resp.data == bytes.fromhex("AABB") and resp.sw == 0x9000
    assert reader.sent[1:] == [bytes.fromhex("41C0000001")]


def test_6cxx_re_sends_with_the_le_the_card_asked_for() -> None:
    reader = ScriptedReader("6C05", "01020304059000")
    resp = exchange(reader, CommandApdu(0x00, 0xCA, 0, 0xC2, le=256))
    assert resp.data == bytes.fromhex("0102030405")
    assert reader.sent == [bytes.fromhex("00CA00C200"), bytes.fromhex("00CA00C205")]


def test_raw_mode_returns_the_first_answer() -> None:
    reader = ScriptedReader("6110")
    assert exchange(reader, CommandApdu(0, 0xA4, 4, 0), follow=False).sw == 0x6110
    assert len(reader.sent) == 1


def test_a_card_that_never_stops_offering_data_is_bounded() -> None:
    reader = ScriptedReader(*["00" * 255 + "6100"] * 300)
    with pytest.raises(ScriptError, match="61xx to 256 GET RESPONSEs"):
        exchange(reader, CommandApdu(0, 0xCA, 0, 0xC2))
