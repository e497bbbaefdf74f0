"""The card's own APDU trace (`card serve --trace`): what the card receives and answers, with
secrecy decided from the command alone (card_applet/secrecy.py), as the terminal decides it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from card_applet.apdu import CommandApdu, ResponseApdu
from card_applet.apdu_trace import TRAFFIC, CardTrace, TracedCard, TraceStyle
from card_applet.secrecy import Secrecy, is_secret
from card_applet.tlv import tlv
from card_applet.vocabulary import TAG_AAD, TAG_CONTEXT, TAG_CRYPTOGRAM, Ins, Pso
from terminal.session import CardSession
from tests.card_applet.conftest import PIN_BLOCK, CardDriver

PLAIN = b"4970101234567890 12/29 Alice Martin, 5 avenue Foch, 75016 Paris"


@dataclass
class Recorder:
    """An exchange sink that keeps what it is given."""

    rows: list[tuple[CommandApdu, ResponseApdu, bool, bool]] = field(default_factory=list)

    def write(self, cmd: CommandApdu, resp: ResponseApdu, *, hide_command: bool = False,
              hide_response: bool = False) -> None:
        self.rows.append((cmd, resp, hide_command, hide_response))


@pytest.fixture
def card_trace(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(TRAFFIC, logger="nettx.card.apdu")
    yield caplog


def send(card: TracedCard, cmd: CommandApdu) -> ResponseApdu:
    return ResponseApdu.from_bytes(card.process(cmd.to_bytes()))


@pytest.mark.parametrize(("cla", "ins", "secret"), [
    (0x00, Ins.VERIFY, True), (0x00, Ins.CHANGE_REFERENCE_DATA, True),
    (0x00, Ins.RESET_RETRY_COUNTER, True), (0x00, Ins.PERFORM_SECURITY_OPERATION, True),
    (0x10, Ins.PERFORM_SECURITY_OPERATION, True),  # a chained part
    (0x00, Ins.INTERNAL_AUTHENTICATE, True), (0x00, Ins.EXTERNAL_AUTHENTICATE, True),
    (0x80, Ins.INITIALIZE_UPDATE, True), (0x80, Ins.STORE_DATA, True),
    (0x80, Ins.SET_STATUS, True),
    (0x00, Ins.SELECT, False), (0x00, Ins.GET_DATA, False), (0x00, Ins.GET_CHALLENGE, False),
    (0x00, Ins.MANAGE_SECURITY_ENVIRONMENT, False), (0x00, Ins.GET_RESPONSE, False),
    (0x80, Ins.VERIFY, False),  # a proprietary 20 is not VERIFY
])
def test_the_table_names_the_commands_that_carry_secrets(cla: int, ins: int,
                                                         secret: bool) -> None:
    assert is_secret(CommandApdu(cla, ins, 0, 0)) is secret


def test_a_refused_command_between_does_not_unmask_the_rest_of_a_secret(
        ready_card: CardDriver, peer: CardSession,
        card_trace: pytest.LogCaptureFixture) -> None:
    """The attack: DECIPHER with a short Le leaves the plaintext pending behind 61xx; a
    command the applet refuses at its class check (FF: 6E00) keeps it pending (docs/apdu.md
    1.8); GET RESPONSE then fetches it. Deciding GET RESPONSE's secrecy from the previous
    command alone put that plaintext in the trace."""
    sealed = peer.encrypt(PLAIN, b"order 17", b"seller")
    recorder = Recorder()
    card = TracedCard(ready_card.applet, "card t", CardTrace(sink=recorder))
    data = tlv(TAG_CRYPTOGRAM, sealed) + tlv(TAG_AAD, b"order 17") + tlv(TAG_CONTEXT, b"seller")

    first = send(card, CommandApdu(0x00, Ins.PERFORM_SECURITY_OPERATION, Pso.DECIPHER >> 8,
                                   Pso.DECIPHER & 0xFF, data, 16))
    refused = send(card, CommandApdu(0xFF, 0x00, 0x00, 0x00))
    rest = send(card, CommandApdu(0x00, Ins.GET_RESPONSE, 0, 0, le=256))

    # the attack works on the card: the plaintext did come out, in two parts
    assert first.sw1 == 0x61 and refused.sw == 0x6E00 and rest.sw == 0x9000
    assert first.data + rest.data == PLAIN
    text = card_trace.text
    for start in range(0, len(PLAIN) - 4, 4):
        assert PLAIN[start:start + 4].hex(" ").upper() not in text, PLAIN[start:start + 4]
    assert f"SEND <{len(rest.data)} bytes redacted> SW=9000" in text
    assert [(r[2], r[3]) for r in recorder.rows] == [(True, True), (False, False),
                                                     (False, True)]


def test_the_card_logs_what_it_receives_and_answers(card: CardDriver,
                                                    card_trace: pytest.LogCaptureFixture
                                                    ) -> None:
    traced = TracedCard(card.applet, "card 4e54", CardTrace())
    send(traced, CommandApdu(0x00, Ins.VERIFY, 0x00, 0x81, PIN_BLOCK))
    send(traced, CommandApdu(0x00, Ins.GET_DATA, 0x00, 0xC2, le=256))
    traced.process(bytes.fromhex("00A404"))  # too short to be an APDU

    lines = [r.getMessage() for r in card_trace.records]
    assert lines[:4] == [
        "card 4e54 RECV 00 20 00 81 Lc=8 <8 bytes redacted>",
        "card 4e54 SEND SW=9000 (success)",
        "card 4e54 RECV 00 CA 00 C2 Le=256",
        f"card 4e54 SEND {card.state.serial.hex(' ').upper()} SW=9000 (success)",
    ]
    assert lines[4] == "card 4e54 RECV 00 A4 04 (malformed)"
    assert lines[5].startswith("card 4e54 SEND SW=67")
    assert "31 32 33 34" not in card_trace.text


def test_long_data_is_elided_unless_the_whole_is_asked_for(
        card: CardDriver, card_trace: pytest.LogCaptureFixture) -> None:
    select = CommandApdu(0x00, Ins.SELECT, 0x04, 0x00, bytes.fromhex("F0455030373931393031"),
                         256)
    fci = send(TracedCard(card.applet, "short", CardTrace()), select).data
    assert len(fci) > 64
    send(TracedCard(card.applet, "whole", CardTrace(TraceStyle(full=True))), select)

    short, whole = (r.getMessage() for r in card_trace.records if "SEND" in r.getMessage())
    assert f"... ({len(fci)} bytes)" in short and fci.hex(" ").upper() not in short
    assert whole == f"whole SEND {fci.hex(' ').upper()} SW=9000 (success)"


def test_secrets_are_logged_and_recorded_only_when_asked(
        card: CardDriver, card_trace: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    traced = TracedCard(card.applet, "c", CardTrace(TraceStyle(secrets=True), recorder))
    send(traced, CommandApdu(0x00, Ins.VERIFY, 0x00, 0x81, PIN_BLOCK))
    assert "Lc=8 31 32 33 34 FF FF FF FF" in card_trace.text
    assert recorder.rows[0][2:] == (False, False)


def test_a_reset_forgets_a_pending_secret() -> None:
    secrecy = Secrecy()
    secrecy.command(CommandApdu(0x00, Ins.PERFORM_SECURITY_OPERATION, 0x80, 0x86, b"x", 1))
    assert secrecy.response(ResponseApdu(b"p", 0x6110)).response
    secrecy.reset()
    secrecy.command(CommandApdu(0x00, Ins.GET_RESPONSE, 0, 0, le=16))
    assert not secrecy.response(ResponseApdu(b"", 0x6985)).response
