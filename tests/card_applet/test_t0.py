"""The card's T=0 engine (card_applet/t0.py), byte for byte: procedure bytes, the case 1-4
mapping of ISO/IEC 7816-3 12.2, 6C Na answered without running the command again, NULL."""

from __future__ import annotations

from card_applet.t0 import NULL, Phase, T0Card

SELECT = bytes.fromhex("00 A4 04 0C 0A") + bytes.fromhex("F0") + b"EP0791901"


def run(card: T0Card, data: bytes, answer: bytes | None = None) -> tuple[bytes, bytes | None]:
    """Feed `data`; if a command comes out, answer it with `answer`. (sent, executed)."""
    out = card.receive(data)
    sent, executed = out.send, out.execute
    if executed is not None:
        assert answer is not None
        assert card.busy and card.wanted == 0 and card.at_boundary
        sent += card.executed(answer, card.generation).send
    return sent, executed


def test_case_1_is_executed_at_its_header() -> None:
    card = T0Card()
    sent, executed = run(card, bytes.fromhex("00 20 00 81 00"), bytes.fromhex("63 C3"))
    assert executed == bytes.fromhex("00 20 00 81")  # VERIFY, no data: a status query
    assert sent == bytes.fromhex("63 C3")
    assert card.phase is Phase.HEADER and card.at_boundary


def test_case_3_acks_then_takes_p3_bytes() -> None:
    card = T0Card()
    sent, executed = run(card, SELECT[:5])
    assert (sent, executed) == (b"\xa4", None)  # ACK = INS: send all the data
    assert card.wanted == 10 and not card.at_boundary
    sent, executed = run(card, SELECT[5:], b"\x90\x00")
    assert executed == SELECT  # no Le: a case 4 command's data comes by 61xx (the applet's)
    assert sent == b"\x90\x00"
    assert card.executions == 1


def test_case_2_sends_ack_data_sw() -> None:
    card = T0Card()
    challenge = bytes(range(8))
    sent, executed = run(card, bytes.fromhex("00 84 00 00 08"), challenge + b"\x90\x00")
    assert executed == bytes.fromhex("00 84 00 00 08")  # P3 is Le
    assert sent == b"\x84" + challenge + b"\x90\x00"


def test_case_2_with_only_a_status_word_sends_no_ack() -> None:
    card = T0Card()
    sent, _ = run(card, bytes.fromhex("00 84 00 00 08"), b"\x69\x85")
    assert sent == b"\x69\x85"


def test_fewer_bytes_than_le_is_6c_and_the_repeat_is_not_executed_again() -> None:
    card = T0Card()
    answer = bytes(range(40)) + b"\x90\x00"
    sent, _executed = run(card, bytes.fromhex("00 CA 00 FF 00"), answer)  # Le 00: 256
    assert sent == b"\x6c\x28"  # 2S.3: Na = 40
    out = card.receive(bytes.fromhex("00 CA 00 FF 28"))
    assert out.execute is None  # the kept answer, not a second run
    assert out.send == b"\xca" + answer
    assert card.executions == 1


def test_the_kept_answer_is_dropped_by_any_other_command() -> None:
    card = T0Card()
    run(card, bytes.fromhex("00 CA 00 FF 00"), bytes(40) + b"\x90\x00")
    run(card, bytes.fromhex("00 84 00 00 08"), b"\x69\x85")
    _, executed = run(card, bytes.fromhex("00 CA 00 FF 28"), bytes(40) + b"\x90\x00")
    assert executed is not None and card.executions == 3


def test_byte_by_byte_uses_the_complemented_ins() -> None:
    card = T0Card(byte_by_byte=True)
    sent, _ = run(card, SELECT[:5])
    assert sent == b"\x5b"  # INS ^ FF: the next byte only
    for byte in SELECT[5:-1]:
        sent, _ = run(card, bytes((byte,)))
        assert sent == b"\x5b"
    sent, executed = run(card, SELECT[-1:], b"\x90\x00")
    assert executed == SELECT and sent == b"\x90\x00"
    sent, _ = run(card, bytes.fromhex("00 84 00 00 02"), b"\x01\x02\x90\x00")
    assert sent == bytes.fromhex("7B 01 7B 02 90 00")


def test_ins_6x_and_9x_are_refused_at_the_header() -> None:
    card = T0Card()
    for ins in (0x60, 0x6F, 0x90, 0x9A):
        sent, executed = run(card, bytes((0x00, ins, 0, 0, 5)))
        assert (sent, executed) == (b"\x6d\x00", None)
    assert card.executions == 0 and card.at_boundary


def test_data_for_a_command_sent_without_le_is_refused() -> None:
    # an applet must answer 61xx here (the data comes by GET RESPONSE): T=0 has no way to
    # send data after a case 3 TPDU
    card = T0Card()
    run(card, SELECT[:5])
    sent, _ = run(card, SELECT[5:], b"\x6f\x56\x90\x00")
    assert sent == b"\x6f\x00"


def test_null_only_while_the_command_runs() -> None:
    card = T0Card()
    assert card.null().send == b""
    out = card.receive(bytes.fromhex("00 84 00 00 08"))
    assert out.execute is not None
    assert card.null().send == bytes((NULL,)) == b"\x60"
    card.executed(b"\x69\x85", card.generation)
    assert card.null().send == b""


def test_a_tpdu_that_stops_is_abandoned_and_nothing_runs() -> None:
    card = T0Card()
    run(card, SELECT[:5])
    run(card, SELECT[5:9])  # a corrupted P3 promised more than came
    assert card.abandon()
    assert card.at_boundary and card.executions == 0
    assert not card.abandon()  # nothing left
    run(card, b"\x00\x84")  # a partial header too
    assert card.abandon()


def test_an_answer_after_a_reset_goes_to_no_one() -> None:
    card = T0Card()
    out = card.receive(bytes.fromhex("00 84 00 00 08"))
    generation = card.generation
    assert out.execute is not None
    card.reset()
    assert card.executed(bytes(8) + b"\x90\x00", generation).send == b""
    assert card.at_boundary
