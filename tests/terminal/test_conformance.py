"""The ISO/IEC 7816-4 conformance suite: our card passes it through every reader, the
suite notices a card that breaks the rules, and its reports and CLI say so."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from card_applet.apdu import ApduFormatError, CommandApdu
from card_applet.applet import Applet
from card_applet.atr import ATR
from card_applet.state import FileStore, read_state
from card_applet.vocabulary import AID
from host.cli.main import main
from terminal.conformance import REGISTRY, Outcome, Target, run_suite, to_json, to_junit
from terminal.conformance.capabilities import from_atr, historical_bytes
from terminal.conformance.model import Check, Exchange
from terminal.conformance.probe import PinFormat, other_pin, pin_block
from terminal.conformance.profiles import NETTX
from terminal.errors import CardRemovedError, ReaderError
from terminal.inprocess import InProcessReader
from terminal.reader import Reader
from tests.conftest import PIN, PUK

OURS = replace(NETTX, pin=PIN, puk=PUK)
# what our card does not offer: no 6Cxx (it chains with 61xx), no logical channels
FILE_SYSTEM_CHECKS = {"select-fid", "select-path", "select-fcp", "read-binary", "read-past-end"}
OUR_NOT_APPLICABLE = {"wrong-le-6cxx", "manage-channel"}
# T=0 carries short APDUs only, and its TPDU mapping refuses a malformed APDU before sending
T0_NOT_APPLICABLE = {"le-0000-is-65536": "carries short APDUs only",
                     "case-3e-4e": "carries short APDUs only",
                     "wrong-lc": "the reader refused the malformed APDU"}


def test_our_card_passes_every_applicable_check(card_on_reader: Reader,
                                                card_state: Path) -> None:
    report = run_suite(card_on_reader, OURS)

    failed = [(r.check.id, r.reason) for r in report.results
              if r.outcome in (Outcome.FAIL, Outcome.ERROR, Outcome.DEVIATION)]
    assert failed == []
    assert report.passes(strict=True)
    assert {r.check.id for r in report.results} == {c.id for c in REGISTRY}
    # the card has an MF (docs/apdu.md 3.17): the file checks run, and pass
    assert {r.check.id for r in report.results
            if r.outcome is Outcome.PASS} >= FILE_SYSTEM_CHECKS
    not_applicable = {r.check.id: r.reason for r in report.results
                      if r.outcome is Outcome.NOT_APPLICABLE}
    if getattr(card_on_reader, "protocol", 1) == 0:
        for check_id, why in T0_NOT_APPLICABLE.items():
            assert why in not_applicable.pop(check_id, "")
    assert set(not_applicable) == OUR_NOT_APPLICABLE
    # the blocking check unblocked the PIN again, and the counters are whole
    state = read_state(card_state)
    assert (state.pin_tries, state.puk_tries) == (3, 3)


def test_without_pin_the_pin_checks_are_not_applicable(card_state: Path) -> None:
    report = run_suite(InProcessReader(Applet(FileStore(card_state))), NETTX)
    na = {r.check.id: r.reason for r in report.results
          if r.outcome is Outcome.NOT_APPLICABLE}
    assert {"security-status", "pin-try-counter", "pin-blocked"} <= set(na)
    assert "--pin" in na["pin-try-counter"]
    assert report.passed
    assert read_state(card_state).pin_tries == 3  # no try spent


ABSENT = Target(aid=bytes.fromhex("A000000003000000"))  # not on this card


def test_an_absent_application_fails_once_by_name(card_state: Path) -> None:
    report = run_suite(InProcessReader(Applet(FileStore(card_state))), ABSENT)
    by_id = {r.check.id: r for r in report.results}
    assert [r.check.id for r in report.results if r.outcome is Outcome.FAIL] == ["select-aid"]
    assert "no application A000000003000000: SELECT answered 6A82" in by_id["select-aid"].reason
    assert by_id["case-3s"].outcome is Outcome.NOT_APPLICABLE
    assert "failed in select-aid" in by_id["case-3s"].reason
    assert by_id["wrong-cla"].outcome is Outcome.PASS  # needs no application
    assert not report.passed


def test_an_absent_application_fails_whichever_checks_run(card_state: Path) -> None:
    report = run_suite(InProcessReader(Applet(FileStore(card_state))), ABSENT,
                       only=["case-3s", "get-response"])
    assert [r.outcome for r in report.results] == [Outcome.FAIL, Outcome.NOT_APPLICABLE]
    assert not report.passed


def test_without_an_aid_the_application_checks_are_not_applicable(card_state: Path) -> None:
    # how vicc is run: no application of ours, so nothing to find missing
    report = run_suite(InProcessReader(Applet(FileStore(card_state))), Target())
    by_id = {r.check.id: r for r in report.results}
    assert by_id["select-aid"].outcome is Outcome.NOT_APPLICABLE
    assert "no application AID given" in by_id["select-aid"].reason
    assert report.passed


SELECT_FCI = bytes.fromhex("00A40400") + bytes((len(AID),)) + AID  # + Le


class LyingCard:
    """Our applet behind a reader that rewrites some answers, as a non-conforming card
    would give them."""

    extended_length = True
    name = "lying card"

    def __init__(self, applet: Applet, rewrite: dict[bytes, bytes]) -> None:
        self.inner = InProcessReader(applet)
        self.rewrite = rewrite
        self.atr = ATR

    def power_on(self) -> bytes:
        return self.inner.power_on()

    def power_off(self) -> None:
        self.inner.power_off()

    def reset(self) -> bytes:
        return self.inner.reset()

    def transmit(self, apdu: bytes) -> bytes:
        for prefix, answer in self.rewrite.items():
            if apdu.startswith(prefix):
                return answer
        return self.inner.transmit(apdu)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(("prefix", "answer", "check_id"), [
    (bytes.fromhex("2084"), bytes.fromhex("0102030405060708 9000"), "wrong-cla"),
    (bytes.fromhex("0002"), bytes.fromhex("9000"), "unknown-ins"),
    (bytes.fromhex("00A47F"), bytes.fromhex("9000"), "wrong-p1p2"),
    (bytes.fromhex("00C0000000"), bytes(4) + bytes.fromhex("9000"), "get-response-nothing"),
    (bytes.fromhex("0384"), bytes.fromhex("00112233445566779000"), "channel-not-open"),
    (bytes.fromhex("00A4040C02"), bytes.fromhex("9000"), "wrong-lc"),  # executed malformed
    (bytes.fromhex("08A4"), bytes.fromhex("9000"), "secure-messaging-cla"),  # SM read as plain
    # Le ignored: Ne is a maximum (5.1), whatever the status word
    (SELECT_FCI + b"\x04", bytes(range(20)) + b"\x90\x00", "get-response"),
    (SELECT_FCI + b"\x01", bytes(range(20)) + b"\x90\x00", "wrong-le-6cxx"),
    # GET CHALLENGE executed inside a chain, which the card then still completes
    (bytes.fromhex("0084000008"), bytes(8) + b"\x90\x00", "chaining-interrupted"),
])
def test_the_suite_catches_a_card_that_breaks_a_rule(card_state: Path, prefix: bytes,
                                                     answer: bytes, check_id: str) -> None:
    reader = LyingCard(Applet(FileStore(card_state)), {prefix: answer})
    report = run_suite(reader, OURS)
    failed = {r.check.id: r for r in report.results if r.outcome is Outcome.FAIL}
    assert set(failed) == {check_id}
    assert not report.passed
    assert any(e.command.startswith(prefix) for e in failed[check_id].exchanges)


def test_a_try_counter_that_does_not_count_fails(card_state: Path) -> None:
    wrong = pin_block("2345", PinFormat.ASCII_FF)  # other_pin("1234")
    reader = LyingCard(Applet(FileStore(card_state)),
                       {bytes.fromhex("0020008108") + wrong: bytes.fromhex("63C3")})
    report = run_suite(reader, OURS, only=["pin-try-counter"])
    (result,) = report.results
    assert result.outcome is Outcome.FAIL
    assert "expected 63C2" in result.reason
    # the try the failed check spent is given back with the right PIN
    assert "restored: the right PIN reset the try counter" in result.reason
    assert read_state(card_state).pin_tries == 3


class BlocksWith6983(LyingCard):
    """Answers the wrong try that blocks the PIN with 6983 instead of 63C0."""

    def transmit(self, apdu: bytes) -> bytes:
        answer = super().transmit(apdu)
        return bytes.fromhex("6983") if answer == bytes.fromhex("63C0") else answer


def test_a_pin_check_failing_midway_unblocks_the_pin_again(card_state: Path) -> None:
    reader = BlocksWith6983(Applet(FileStore(card_state)), {})
    (result,) = run_suite(reader, OURS, only=["pin-blocked"]).results
    assert result.outcome is Outcome.FAIL
    assert "wrong PIN: expected 63C0, card answered 6983" in result.reason
    assert "restored: unblocked with the PUK" in result.reason
    state = read_state(card_state)
    assert (state.pin_tries, state.puk_tries) == (3, 3)


def test_a_pin_the_card_refused_is_not_tried_again_to_restore(card_state: Path) -> None:
    # "5678" is not the PIN: the check spends a try on other_pin, one on "5678", then stops
    (result,) = run_suite(InProcessReader(Applet(FileStore(card_state))),
                          replace(OURS, pin="5678"), only=["pin-try-counter"]).results
    assert result.outcome is Outcome.FAIL
    assert "NOT RESTORED: the card refused the PIN given; status 63C1" in result.reason
    assert read_state(card_state).pin_tries == 1  # not 0: no third wrong try


def test_reports_never_carry_the_pin_or_the_puk(card_state: Path) -> None:
    # pin-blocked fails with a trace holding wrong PINs, the right PIN and the PUK
    report = run_suite(BlocksWith6983(Applet(FileStore(card_state)), {}), OURS,
                       only=["pin-blocked", "unknown-ins"])
    assert report.results[-1].outcome is Outcome.FAIL
    secrets = [pin_block(v, PinFormat.ASCII_FF) for v in (PIN, other_pin(PIN), PUK)]
    junit = ET.fromstring(to_junit(report))
    for text in (to_json(report), "\n".join(junit.itertext())):
        assert "<8 bytes redacted>" in text
        assert "00 2C 01 81 08 <8 bytes redacted>" in text  # the unblock is there, PUK cut
        for secret in secrets:
            for shown in (secret.hex(" "), secret.hex()):
                assert shown.upper() not in text.upper()


@pytest.mark.parametrize(("command", "shown"), [
    ("0024008110" + "31323334FFFFFFFF" * 2, "00 24 00 81 10 <16 bytes redacted>"),
    ("002000810000083132333435363738", "00 20 00 81 00 00 08 <8 bytes redacted>"),
    ("00200081083132", "00 20 00 81 <3 bytes redacted>"),  # malformed: all after the header
    ("80E2000003DF1000", "80 E2 00 00 03 <3 bytes redacted>"),  # personalisation data
    ("00200081", "00 20 00 81"),  # the status query has no data to hide
    ("00A4040C02AABB", "00 A4 04 0C 02 AA BB"),
])
def test_exchanges_record_secret_command_data_as_its_length(command: str, shown: str) -> None:
    exchange = Exchange.record(bytes.fromhex(command), b"\x63\xC2")
    assert exchange.render() == f"> {shown}\n< 63 C2"


@pytest.fixture
def broken_wrong_cla() -> Iterator[None]:
    """wrong-cla replaced by a check with a bug in it."""
    i = next(i for i, c in enumerate(REGISTRY) if c.id == "wrong-cla")

    def broken(p: object) -> str:
        return {}["no such key"]

    REGISTRY[i], kept = Check("wrong-cla", "broken", "5.1.1", broken), REGISTRY[i]
    try:
        yield
    finally:
        REGISTRY[i] = kept


@pytest.mark.usefixtures("broken_wrong_cla")
def test_an_internal_error_is_an_error_result_and_the_suite_goes_on(card_state: Path) -> None:
    report = run_suite(InProcessReader(Applet(FileStore(card_state))), OURS)
    by_id = {r.check.id: r for r in report.results}
    assert by_id["wrong-cla"].outcome is Outcome.ERROR
    assert by_id["wrong-cla"].reason == "internal: KeyError: 'no such key'"
    assert by_id["unknown-ins"].outcome is Outcome.PASS  # not "not run": the card is there
    assert json.loads(to_json(report))["totals"]["error"] == 1


def test_a_pin_that_does_not_fit_its_block_is_an_error_result(card_state: Path) -> None:
    target = replace(OURS, pin="123456789")  # 9 digits: no FF-padded block holds them
    report = run_suite(InProcessReader(Applet(FileStore(card_state))), target)
    errors = {r.check.id: r.reason for r in report.results if r.outcome is Outcome.ERROR}
    assert set(errors) == {"security-status", "pin-try-counter", "pin-blocked"}
    assert all(e.startswith("internal: ValueError: an FF-padded PIN block") for e in
               errors.values())
    assert read_state(card_state).pin_tries == 3


# -- what ISO/IEC 7816-4 permits is not failed ------------------------------------------------


@pytest.mark.parametrize(("prefix", "answer", "check_id", "outcome"), [
    # next occurrence is optional (7.1.1)
    (bytes.fromhex("00A4040205"), bytes.fromhex("6A86"), "select-next", Outcome.NOT_APPLICABLE),
    (bytes.fromhex("00A4040205"), bytes.fromhex("6A81"), "select-next", Outcome.NOT_APPLICABLE),
    # partial DF name selection is optional, and our ATR does not advertise it
    (bytes.fromhex("00A4040005") + AID[:5], bytes.fromhex("6A86"), "select-partial-aid",
     Outcome.NOT_APPLICABLE),
    (bytes.fromhex("00A4040005") + AID[:5], bytes.fromhex("6A81"), "select-partial-aid",
     Outcome.NOT_APPLICABLE),
    # no logical channels: the class refused as a whole
    (bytes.fromhex("0384"), bytes.fromhex("6E00"), "channel-not-open", Outcome.PASS),
    # chaining offered, but not for SELECT
    (bytes.fromhex("10A4"), bytes.fromhex("6884"), "chaining", Outcome.NOT_APPLICABLE),
    # nothing pending: zero bytes and 9000 says so as well as a refusal (7.6.1, 5.1)
    (bytes.fromhex("00C0000000"), bytes.fromhex("9000"), "get-response-nothing", Outcome.PASS),
    (bytes.fromhex("00C0000000"), bytes.fromhex("6F00"), "get-response-nothing", Outcome.PASS),
])
def test_the_suite_accepts_what_the_standard_permits(card_state: Path, prefix: bytes,
                                                     answer: bytes, check_id: str,
                                                     outcome: Outcome) -> None:
    reader = LyingCard(Applet(FileStore(card_state)), {prefix: answer})
    report = run_suite(reader, OURS)
    by_id = {r.check.id: r for r in report.results}
    assert by_id[check_id].outcome is outcome, by_id[check_id].reason
    assert report.passed


@pytest.mark.parametrize(("prefix", "answer", "check_id", "preferred"), [
    (bytes.fromhex("00A4040C02"), bytes.fromhex("6A80"), "wrong-lc", (0x6700,)),
    (bytes.fromhex("2084"), bytes.fromhex("6D00"), "wrong-cla", (0x6E00,)),
    (bytes.fromhex("0002"), bytes.fromhex("6E00"), "unknown-ins", (0x6D00,)),
    (bytes.fromhex("00A47F"), bytes.fromhex("6A80"), "wrong-p1p2", (0x6A86, 0x6B00)),
    (bytes.fromhex("0384"), bytes.fromhex("6D00"), "channel-not-open", (0x6881, 0x6E00)),
    (bytes.fromhex("00A4040C0B"), bytes.fromhex("6A86"), "select-unknown", (0x6A82,)),
    (bytes.fromhex("08A4"), bytes.fromhex("6988"), "secure-messaging-cla", (0x6882,)),
])
def test_a_refusal_with_another_status_word_is_a_deviation(card_state: Path, prefix: bytes,
                                                          answer: bytes, check_id: str,
                                                          preferred: tuple[int, ...]) -> None:
    reader = LyingCard(Applet(FileStore(card_state)), {prefix: answer})
    report = run_suite(reader, OURS)
    by_id = {r.check.id: r for r in report.results}
    result = by_id[check_id]
    assert result.outcome is Outcome.DEVIATION, result.reason
    assert (result.sw_seen, result.sw_preferred) == (int.from_bytes(answer), preferred)
    assert result.deviations and result.deviations[0].seen == int.from_bytes(answer)
    assert [r.check.id for r in report.results if r.outcome not in
            (Outcome.PASS, Outcome.NOT_APPLICABLE)] == [check_id]
    # deviations alone do not fail the suite, unless strict
    assert report.passed and not report.passes(strict=True)
    doc = json.loads(to_json(report))
    assert (doc["failures"], doc["deviations"], doc["passed"]) == ([], [check_id], True)
    (entry,) = [c for c in doc["checks"] if c["id"] == check_id]
    assert entry["sw_seen"] == answer.hex().upper()
    assert entry["sw_preferred"] == [f"{w:04X}" for w in preferred]
    assert json.loads(to_json(report, strict=True))["passed"] is False
    strict = ET.fromstring(to_junit(report, strict=True))
    assert strict.get("failures") == "1"
    assert strict.find(".//failure[@type='deviation']") is not None
    assert ET.fromstring(to_junit(report)).get("failures") == "0"


class RefusingReader(LyingCard):
    """A driver that checks APDUs itself and refuses a malformed one."""

    def transmit(self, apdu: bytes) -> bytes:
        try:
            CommandApdu.from_bytes(apdu)
        except Exception as exc:
            raise ReaderError("SCardTransmit: SCARD_E_INVALID_PARAMETER") from exc
        return super().transmit(apdu)


def test_a_driver_refusing_a_malformed_apdu_is_not_applicable(card_state: Path) -> None:
    report = run_suite(RefusingReader(Applet(FileStore(card_state)), {}), OURS)
    by_id = {r.check.id: r for r in report.results}
    assert by_id["wrong-lc"].outcome is Outcome.NOT_APPLICABLE
    assert "SCARD_E_INVALID_PARAMETER" in by_id["wrong-lc"].reason
    assert report.passed  # and the suite went on


class T0Card(LyingCard):
    """A T=0 card: a case 4 command reaches it without Le (ISO/IEC 7816-3), so it answers
    bare 61xx and everything comes by GET RESPONSE. No extended lengths under T=0."""

    extended_length = False

    def transmit(self, apdu: bytes) -> bytes:
        try:
            cmd = CommandApdu.from_bytes(apdu)
        except ApduFormatError:
            cmd = None  # malformed: the card will say so
        if cmd is not None and cmd.data and cmd.le is not None and not cmd.extended:
            apdu = apdu[:-1]
        return super().transmit(apdu)


def test_a_t0_card_answering_case_4_with_bare_61xx_passes(card_state: Path) -> None:
    report = run_suite(T0Card(Applet(FileStore(card_state)), {}), OURS)
    by_id = {r.check.id: r for r in report.results}
    assert [(r.check.id, r.reason) for r in report.results
            if r.outcome in (Outcome.FAIL, Outcome.ERROR)] == []
    assert by_id["get-response"].outcome is Outcome.PASS
    assert by_id["le-00-is-256"].outcome is Outcome.PASS
    assert "GET RESPONSE" in by_id["le-00-is-256"].reason


class Interloped(LyingCard):
    """Answers a GET CHALLENGE sent inside an open chain as a card may: `executes` drops the
    chain and runs it; otherwise the card refuses it with 6883 and keeps the chain."""

    def __init__(self, applet: Applet, *, executes: bool) -> None:
        super().__init__(applet, {})
        self.executes, self.chain_open = executes, False

    def transmit(self, apdu: bytes) -> bytes:
        if self.chain_open and apdu[1] == 0x84:
            self.chain_open = False
            if not self.executes:
                return bytes.fromhex("6883")
            super().transmit(apdu)  # our applet drops the chain (and refuses it)
            return bytes(8) + b"\x90\x00"
        answer = super().transmit(apdu)
        self.chain_open = bool(apdu[0] & 0x10) and answer == b"\x90\x00"
        return answer


@pytest.mark.parametrize(("executes", "says"), [
    (True, "interloper executed (9000), chain dropped: orphan last link 6A82"),
    (False, "interloper refused (6883), chain kept: last link joined 9000"),
])
def test_an_interrupted_chain_may_be_dropped_or_kept(card_state: Path, executes: bool,
                                                     says: str) -> None:
    reader = Interloped(Applet(FileStore(card_state)), executes=executes)
    (result,) = run_suite(reader, OURS, only=["chaining-interrupted"]).results
    assert (result.outcome, result.reason) == (Outcome.PASS, says)


class ShortLe00(LyingCard):
    """Reads Le = 00 as 8 after the first SELECT since a reset: 8 bytes of FCI and 9000."""

    def reset(self) -> bytes:
        self.seen = 0
        return super().reset()

    def transmit(self, apdu: bytes) -> bytes:
        answer = super().transmit(apdu)
        if apdu == SELECT_FCI + b"\x00":
            self.seen += 1
            if self.seen > 1:
                return answer[:8] + b"\x90\x00"
        return answer


def test_le_00_read_as_a_small_ne_fails(card_state: Path) -> None:
    report = run_suite(ShortLe00(Applet(FileStore(card_state)), {}), OURS)
    failed = {r.check.id: r.reason for r in report.results if r.outcome is Outcome.FAIL}
    assert set(failed) == {"le-00-is-256"}
    assert "Le = 00 read as less than 256" in failed["le-00-is-256"]


def test_le_00_with_only_a_short_challenge_to_read_is_not_applicable(card_state: Path) -> None:
    # vicc: no AID, and GET CHALLENGE gives 8 bytes whatever Le says: that shows nothing
    reader = LyingCard(Applet(FileStore(card_state)),
                       {bytes.fromhex("0084000000"): bytes(8) + b"\x90\x00"})
    (result,) = run_suite(reader, Target(), only=["le-00-is-256"]).results
    assert result.outcome is Outcome.NOT_APPLICABLE
    assert "gave 8 bytes" in result.reason


class DyingCard(LyingCard):
    def __init__(self, applet: Applet, die_on: bytes) -> None:
        super().__init__(applet, {})
        self.die_on = die_on

    def transmit(self, apdu: bytes) -> bytes:
        if apdu.startswith(self.die_on):
            raise CardRemovedError("card left (crashed)")
        return super().transmit(apdu)


def test_a_card_lost_mid_suite_is_an_error_and_the_rest_is_not_run(card_state: Path) -> None:
    reader = DyingCard(Applet(FileStore(card_state)), bytes.fromhex("2084"))
    report = run_suite(reader, OURS)
    outcomes = {r.check.id: r for r in report.results}
    assert outcomes["wrong-cla"].outcome is Outcome.ERROR
    assert "CardRemovedError" in outcomes["wrong-cla"].reason
    assert outcomes["unknown-ins"].reason == "not run: the card was lost during wrong-cla"
    assert not report.passed


def test_with_recover_the_suite_goes_on_after_a_lost_card(card_state: Path) -> None:
    recovered: list[Reader] = []
    lost = FileStore(card_state)

    def recover() -> Reader:
        lost.close()  # the lost card's process is gone, and its lock with it
        recovered.append(InProcessReader(Applet(FileStore(card_state))))
        return recovered[-1]

    reader = DyingCard(Applet(lost), bytes.fromhex("2084"))
    report = run_suite(reader, OURS, recover=recover)
    errors = [r.check.id for r in report.results if r.outcome is Outcome.ERROR]
    assert errors == ["wrong-cla"]
    assert len(recovered) == 1
    assert sum(r.outcome is Outcome.PASS for r in report.results) == (
        len(REGISTRY) - 1 - len(OUR_NOT_APPLICABLE))


def test_a_card_that_does_not_come_back_ends_the_suite(card_state: Path) -> None:
    def recover() -> Reader:
        raise CardRemovedError("no card in the reader")

    reader = DyingCard(Applet(FileStore(card_state)), bytes.fromhex("2084"))
    report = run_suite(reader, OURS, recover=recover)
    last = report.results[-1]
    assert last.outcome is Outcome.ERROR
    assert "did not come back (no card in the reader)" in last.reason


def test_reports_carry_every_check_with_its_clause(card_state: Path) -> None:
    reader = LyingCard(Applet(FileStore(card_state)), {bytes.fromhex("0002"): b"\x90\x00"})
    report = run_suite(reader, OURS)

    doc = json.loads(to_json(report))
    assert doc["passed"] is False
    na = len(OUR_NOT_APPLICABLE)
    assert doc["totals"] == {"pass": len(REGISTRY) - 1 - na, "deviation": 0, "fail": 1,
                             "n/a": na, "error": 0}
    assert (doc["failures"], doc["deviations"]) == (["unknown-ins"], [])
    assert [c["id"] for c in doc["checks"]] == [c.id for c in REGISTRY]
    bad = next(c for c in doc["checks"] if c["id"] == "unknown-ins")
    assert bad["clause"] and bad["exchanges"] and "9000" in bad["reason"]
    assert doc["atr"] == ATR.hex().upper()

    suite = ET.fromstring(to_junit(report))
    assert suite.get("tests") == str(len(REGISTRY))
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("1", "0", str(na))
    failures = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name", "").split(":")[0] for c in failures] == ["unknown-ins"]
    assert "> 00 02 00 00" in (failures[0].find("failure").text or "")  # type: ignore[union-attr]


# -- ATR capabilities -------------------------------------------------------------------------


def test_capabilities_of_our_atr() -> None:
    caps = from_atr(ATR)
    assert caps.known and caps.chaining and caps.extended_length
    assert caps.logical_channels == 0 and not caps.partial_df_name
    assert historical_bytes(ATR) == bytes.fromhex("807300 00C0 556E65747478".replace(" ", ""))


def test_capabilities_of_vicc_atr() -> None:
    caps = from_atr(bytes.fromhex("3B9513810180 73FF01000B".replace(" ", "")))
    assert caps.known and caps.full_df_name and caps.partial_df_name
    assert not (caps.chaining or caps.extended_length or caps.logical_channels)


@pytest.mark.parametrize("atr", [b"", b"\x3b", bytes.fromhex("3BF0"), bytes.fromhex("3B80"),
                                 bytes.fromhex("3B0A8073"), bytes.fromhex("3B03FFFFFF")])
def test_capabilities_of_short_or_odd_atrs_are_unknown(atr: bytes) -> None:
    assert not from_atr(atr).known


def test_pin_block_formats() -> None:
    assert pin_block("1234", PinFormat.ASCII_FF) == bytes.fromhex("31323334FFFFFFFF")
    assert pin_block("1234", PinFormat.ASCII) == b"1234"
    assert pin_block("1234", PinFormat.FORMAT2) == bytes.fromhex("241234FFFFFFFFFF")
    with pytest.raises(ValueError):
        pin_block("12a4", PinFormat.ASCII)


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_conformance_passes_our_card_and_writes_junit(card_state: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "report.xml"
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       "--report", str(out)],
                                env={"NETTX_PIN": PIN, "NETTX_PUK": PUK})
    assert result.exit_code == 0, result.output
    assert "0 deviation, 0 fail, " in result.output
    assert "no failure" in result.output
    # the command that reproduces the table, with the defaults spelled out
    assert (f"reproduce: NETTX_PIN=... NETTX_PUK=... nettx conformance --reader "
            f"inprocess:{card_state} --aid {AID.hex().upper()} --pin-ref 81") in result.output
    assert "wrong-cla" in result.output
    assert ET.parse(out).getroot().get("failures") == "0"


def test_cli_conformance_json_report(card_state: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       "--check", "wrong-cla", "--check", "unknown-ins",
                                       "--report", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [c["id"] for c in doc["checks"]] == ["wrong-cla", "unknown-ins"]
    assert doc["target"]["aid"] == AID.hex().upper()


def test_cli_conformance_exit_status_is_1_when_a_check_fails(card_state: Path) -> None:
    # the PIN given is wrong: the try-counter check cannot see 9000 for "the right PIN"
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       "--check", "pin-try-counter"],
                                env={"NETTX_PIN": "5678"})
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--check", "no-such-check"], {}, "unknown check no-such-check"),
    (["--aid", "F0ZZ"], {}, "is not hex"),
    (["--aid", "F001"], {}, "5..16 bytes"),
    (["--protected", "00"], {}, "is not a command APDU"),
    ([], {"NETTX_PIN": "12"}, "4..12 digits"),
    ([], {"NETTX_PIN": "123456789"}, "holds at most 8 digits (--pin-format ascii-ff)"),
    ([], {"NETTX_PUK": "1234567890"}, "holds at most 8 digits (--pin-format ascii-ff)"),
    (["--pin-format", "ascii"], {"NETTX_PIN": "1234567890123"},
     "4..12 digits (--pin-format ascii)"),
    (["--pin-ref", "0181"], {}, "not one byte"),
    (["--pin", "1234"], {}, "--pin is no longer accepted"),
    (["--prepare", "00"], {}, "is not a command APDU"),
    (["--reconnect", "0"], {}, "0.5<=x<=600"),
])
def test_cli_conformance_refuses_bad_options(card_state: Path, args: list[str],
                                             env: dict[str, str], message: str) -> None:
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       *args], env=env)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) <= 4


def test_cli_conformance_pin_format_validates_pins_given_before_it(card_state: Path) -> None:
    # 9 digits fit a plain ASCII block: the format is known when the PIN is checked
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       "--pin-format", "ascii", "--check", "wrong-cla"],
                                env={"NETTX_PIN": "123456789"})
    assert result.exit_code == 0, result.output


def test_cli_conformance_exit_status_is_1_for_an_absent_application(card_state: Path) -> None:
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       "--aid", "A000000003000000"])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output
    assert "select-aid" in result.output and "1 fail" in result.output


def test_cli_conformance_takes_a_hex_pin_reference(card_state: Path) -> None:
    # P2 = 80 is not our PIN: the card answers 6A88 and case 1 fails, so the option arrived
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       "--pin-ref", "80", "--check", "case-1"])
    assert result.exit_code == 1, result.output
    assert "6A88" in result.output


def test_cli_conformance_without_a_card_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["conformance", "--reader",
                                       f"inprocess:{tmp_path / 'none.json'}"])
    assert result.exit_code == 1
    assert result.output.startswith("error: no card state at")


def test_cli_conformance_lists_its_checks() -> None:
    result = CliRunner().invoke(main, ["conformance", "--list"])
    assert result.exit_code == 0
    for c in REGISTRY:
        assert c.id in result.output


def test_cli_conformance_aid_none_runs_what_needs_no_application(card_state: Path) -> None:
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       "--aid", "none", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    outcomes = {r["check"]: r["outcome"] for r in doc["results"]}
    assert outcomes["select-aid"] == outcomes["case-3s"] == outcomes["case-1"] == "n/a"
    # not even our PIN reference is assumed: nothing but what is given
    assert outcomes["wrong-cla"] == outcomes["unknown-ins"] == "pass"
    assert doc["command"] == f"nettx conformance --reader inprocess:{card_state} --aid none"
    assert (doc["failures"], doc["deviations"], doc["strict"]) == ([], [], False)


def test_cli_conformance_reconnect_needs_a_reader(card_state: Path) -> None:
    result = CliRunner().invoke(main, ["conformance", "--state", str(card_state),
                                       "--reconnect", "5"])
    assert result.exit_code == 2
    assert "needs --reader" in result.output


def test_cli_conformance_prepare_must_be_carried_out(card_state: Path) -> None:
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       "--prepare", "0002000000"])
    assert result.exit_code == 1
    assert "--prepare 0002000000: the card answered 6D00" in result.output
