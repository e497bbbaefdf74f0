"""The APDU trace redacts secrets in both directions (issue: `--trace buy` logged the first
64 bytes of every ENCIPHER plaintext), and shows them only when asked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from card_applet.apdu import CommandApdu, ResponseApdu
from terminal import trace

PLAIN = b"4970101234567890 Alice Martin, 5 avenue Foch" * 3


@pytest.fixture
def traced(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(trace.TRAFFIC, logger="nettx.apdu")
    yield caplog
    trace.show_secrets(False)


def exchange(cmd: CommandApdu, *answers: bytes, reader: str = "r") -> None:
    trace.trace_command(reader, cmd)
    for data in answers:
        trace.trace_response(reader, ResponseApdu(data, 0x6100 if data != answers[-1]
                                                  else 0x9000))
        if data != answers[-1]:
            trace.trace_command(reader, CommandApdu(0x00, 0xC0, 0, 0, le=256))


def test_pso_is_redacted_both_ways_through_get_response(traced: pytest.LogCaptureFixture
                                                        ) -> None:
    exchange(CommandApdu(0x00, 0x2A, 0x86, 0x80, PLAIN, 256), b"\x01" * 20)  # ENCIPHER
    exchange(CommandApdu(0x10, 0x2A, 0x80, 0x86, b"\x02" * 16), b"")  # a chained block
    exchange(CommandApdu(0x00, 0x2A, 0x80, 0x86, b"\x03" * 16, 256), PLAIN[:60], PLAIN[60:])
    exchange(CommandApdu(0x00, 0x88, 0, 0, b"\x04" * 16, 256), b"\x05" * 32)  # INTERNAL AUTH.
    exchange(CommandApdu(0x80, 0x50, 0, 0, b"\x06" * 8, 256), b"\x07" * 28)  # INITIALIZE UPD.
    exchange(CommandApdu(0x00, 0xCA, 0, 0xC2, le=256), bytes.fromhex("0102030405060708"))

    text = traced.text
    assert PLAIN[:16].hex(" ").upper() not in text and PLAIN[60:76].hex(" ").upper() not in text
    for byte in ("01 01 01", "02 02 02", "03 03 03", "04 04 04", "05 05 05", "06 06 06",
                 "07 07 07"):
        assert byte not in text, byte
    assert "RECV <60 bytes redacted> SW=6100" in text
    assert "RECV <72 bytes redacted> SW=9000" in text  # the GET RESPONSE's part too
    assert "RECV 01 02 03 04 05 06 07 08 SW=9000" in text  # GET DATA: public, shown


def test_secrets_are_shown_whole_when_asked(traced: pytest.LogCaptureFixture) -> None:
    trace.show_secrets(True)
    exchange(CommandApdu(0x00, 0x2A, 0x86, 0x80, PLAIN, 256), PLAIN)
    assert traced.text.count(PLAIN.hex(" ").upper()) == 2  # not elided after 64 bytes
    assert "redacted" not in traced.text


def test_another_reader_does_not_inherit_the_secrecy(traced: pytest.LogCaptureFixture) -> None:
    trace.trace_command("a", CommandApdu(0x00, 0x20, 0, 0x81, b"1234\xff\xff\xff\xff"))
    exchange(CommandApdu(0x00, 0xCA, 0, 0xC2, le=256), b"\x0a\x0b", reader="b")
    assert "RECV 0A 0B SW=9000" in traced.text  # reader b's GET DATA, after a's VERIFY
