"""The ISO/IEC 7816-4 conformance suite: our card passes it through every reader, the
suite notices a card that breaks the rules, and its reports and CLI say so."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from card_applet.applet import AID, Applet
from card_applet.atr import ATR
from card_applet.state import FileStore
from host.cli import main
from terminal.conformance import REGISTRY, Outcome, Target, run_suite, to_json, to_junit
from terminal.conformance.capabilities import from_atr, historical_bytes
from terminal.conformance.probe import PinFormat, pin_block
from terminal.conformance.profiles import NETTX
from terminal.errors import CardRemovedError
from terminal.inprocess import InProcessReader
from terminal.reader import Reader
from tests.conftest import PIN, PUK

OURS = replace(NETTX, pin=PIN, puk=PUK)
# what our card does not offer: no 6Cxx (it chains with 61xx), no logical channels
OUR_NOT_APPLICABLE = {"wrong-le-6cxx", "manage-channel"}


def test_our_card_passes_every_applicable_check(card_on_reader: Reader,
                                                card_state: Path) -> None:
    report = run_suite(card_on_reader, OURS)

    failed = [(r.check.id, r.reason) for r in report.results
              if r.outcome in (Outcome.FAIL, Outcome.ERROR)]
    assert failed == []
    assert report.passed
    assert {r.check.id for r in report.results} == {c.id for c in REGISTRY}
    assert {r.check.id for r in report.results
            if r.outcome is Outcome.NOT_APPLICABLE} == OUR_NOT_APPLICABLE
    # the blocking check unblocked the PIN again, and the counters are whole
    state = FileStore(card_state).load()
    assert (state.pin_tries, state.puk_tries) == (3, 3)


def test_without_pin_the_pin_checks_are_not_applicable(card_state: Path) -> None:
    report = run_suite(InProcessReader(Applet(FileStore(card_state))), NETTX)
    na = {r.check.id: r.reason for r in report.results
          if r.outcome is Outcome.NOT_APPLICABLE}
    assert {"security-status", "pin-try-counter", "pin-blocked"} <= set(na)
    assert "--pin" in na["pin-try-counter"]
    assert report.passed
    assert FileStore(card_state).load().pin_tries == 3  # no try spent


def test_an_absent_application_makes_its_checks_not_applicable(card_state: Path) -> None:
    target = Target(aid=bytes.fromhex("A000000003000000"))  # not on this card
    report = run_suite(InProcessReader(Applet(FileStore(card_state))), target)
    by_id = {r.check.id: r for r in report.results}
    assert by_id["select-aid"].outcome is Outcome.NOT_APPLICABLE
    assert "no application A000000003000000" in by_id["select-aid"].reason
    assert by_id["wrong-cla"].outcome is Outcome.PASS  # needs no application
    assert report.passed


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
    (bytes.fromhex("0002"), bytes.fromhex("6A86"), "unknown-ins"),
    (bytes.fromhex("00A47F"), bytes.fromhex("9000"), "wrong-p1p2"),
    (bytes.fromhex("00C0000000"), bytes.fromhex("9000"), "get-response-nothing"),
    (bytes.fromhex("0384"), bytes.fromhex("00112233445566779000"), "channel-not-open"),
    (bytes.fromhex("00A4040C02"), bytes.fromhex("6A80"), "wrong-lc"),
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

    def recover() -> Reader:
        recovered.append(InProcessReader(Applet(FileStore(card_state))))
        return recovered[-1]

    reader = DyingCard(Applet(FileStore(card_state)), bytes.fromhex("2084"))
    report = run_suite(reader, OURS, recover=recover)
    errors = [r.check.id for r in report.results if r.outcome is Outcome.ERROR]
    assert errors == ["wrong-cla"]
    assert len(recovered) == 1
    assert sum(r.outcome is Outcome.PASS for r in report.results) == len(REGISTRY) - 3


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
    assert doc["totals"] == {"pass": len(REGISTRY) - 3, "fail": 1, "n/a": 2, "error": 0}
    assert [c["id"] for c in doc["checks"]] == [c.id for c in REGISTRY]
    bad = next(c for c in doc["checks"] if c["id"] == "unknown-ins")
    assert bad["clause"] and bad["exchanges"] and "9000" in bad["reason"]
    assert doc["atr"] == ATR.hex().upper()

    suite = ET.fromstring(to_junit(report))
    assert suite.get("tests") == str(len(REGISTRY))
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("1", "0", "2")
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
                                       "--pin", PIN, "--puk", PUK, "--report", str(out)])
    assert result.exit_code == 0, result.output
    assert "all applicable checks passed" in result.output
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
                                       "--pin", "5678", "--check", "pin-try-counter"])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--check", "no-such-check"], "unknown check no-such-check"),
    (["--aid", "F0ZZ"], "is not hex"),
    (["--aid", "F001"], "5..16 bytes"),
    (["--protected", "00"], "is not a command APDU"),
    (["--pin", "12"], "4..12 digits"),
    (["--pin-ref", "0181"], "not one byte"),
])
def test_cli_conformance_refuses_bad_options(card_state: Path, args: list[str],
                                             message: str) -> None:
    result = CliRunner().invoke(main, ["conformance", "--reader", f"inprocess:{card_state}",
                                       *args])
    assert result.exit_code == 2
    assert message in result.output


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
