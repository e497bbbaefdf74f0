"""The file system checks (SELECT by FID and path, FCP, READ BINARY) and the secure messaging
check, against a card with a file system that is not ours: Debian's vicc, its ISO 7816 card OS
called in this process (no pcscd: tests/e2e/test_vicc_conformance.py runs it through pcscd).
vicc's card has an MF and no EF, so each card gets EF 2F01 (32 bytes, 41..60) first, as the
documented run does with --prepare. A reader in front of it rewrites some answers, as a
card that breaks a rule would give them, to show that each check sees it."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

import pytest

from terminal.cardproc import VICC_PYTHONPATH, vicc_missing
from terminal.conformance import Outcome, Target, run_suite
from terminal.conformance.model import CheckResult
from tests.conftest import unavailable

FILE = bytes(range(0x41, 0x61))  # EF 2F01's content
PREPARE = (bytes.fromhex("00E0000010620E82010183022F0180020020530141"),
           bytes.fromhex("00D6000020") + FILE + b"\x00")
VICC = Target(pin_reference=0x00)
FILE_CHECKS = ["select-fid", "select-path", "select-fcp", "read-binary", "read-past-end",
               "secure-messaging-cla"]


class ViccInProcess:
    """vicc's Iso7816OS behind the Reader protocol; an exception out of it is the card dying
    (vicc's process ends on it), so it becomes an OSError, as a lost card does."""

    extended_length = False
    name = "vicc in-process"

    def __init__(self, rewrite: dict[bytes, bytes] | None = None,
                 redirect: dict[bytes, bytes] | None = None) -> None:
        generator = importlib.import_module("virtualsmartcard.CardGenerator")
        smartcard = importlib.import_module("virtualsmartcard.VirtualSmartcard")
        card = generator.CardGenerator("iso7816")
        card.generateCard()
        self.os = smartcard.Iso7816OS(*card.getCard())
        self.rewrite = rewrite or {}  # command prefix -> the answer instead
        self.redirect = redirect or {}  # command -> the command vicc executes instead
        for apdu in PREPARE:
            assert self.os.execute(apdu)[-2:] in (b"\x90\x00", b"\x62\x82")

    @property
    def atr(self) -> bytes:
        return bytes(self.os.getATR())

    def power_on(self) -> bytes:
        self.os.powerUp()
        return self.atr

    def reset(self) -> bytes:
        self.os.reset()
        return self.atr

    def power_off(self) -> None:
        pass

    def transmit(self, apdu: bytes) -> bytes:
        for prefix, answer in self.rewrite.items():
            if apdu.startswith(prefix):
                return answer
        try:
            return bytes(self.os.execute(self.redirect.get(apdu, apdu)))
        except Exception as exc:
            raise OSError(f"vicc died: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        pass


@pytest.fixture
def vicc() -> Callable[..., ViccInProcess]:
    missing = vicc_missing()
    if missing:
        unavailable(missing)
    if str(VICC_PYTHONPATH) not in sys.path:
        sys.path.append(str(VICC_PYTHONPATH))
    logging.getLogger().setLevel(logging.WARNING)  # vicc logs every APDU at INFO
    return ViccInProcess


def run(reader: ViccInProcess, *ids: str) -> dict[str, CheckResult]:
    report = run_suite(reader, VICC, only=ids or FILE_CHECKS, recover=lambda: reader)
    return {r.check.id: r for r in report.results}


def test_vicc_passes_the_file_checks_and_deviates_on_secure_messaging(vicc) -> None:
    by_id = run(vicc())
    outcomes = {i: r.outcome for i, r in by_id.items()}
    assert outcomes == {"select-fid": Outcome.PASS, "select-path": Outcome.PASS,
                        "select-fcp": Outcome.ERROR, "read-binary": Outcome.PASS,
                        "read-past-end": Outcome.PASS, "secure-messaging-cla": Outcome.DEVIATION}
    assert "vicc died" in by_id["select-fcp"].reason  # bertlv_pack on SELECT P2 = 04
    assert "32 bytes" in by_id["read-binary"].reason
    assert "at the end 6B00; 5 asked, 2 left: 6282 with the 2 bytes" in \
        by_id["read-past-end"].reason
    sm = by_id["secure-messaging-cla"]
    assert (sm.sw_seen, sm.sw_preferred) == (0x6988, (0x6882,))
    assert [d.what for d in sm.deviations] == ["SELECT MF with CLA 08", "SELECT MF with CLA 0C"]


# vicc cannot return an FCP; these are what a card that can would answer
FCP_MF = bytes.fromhex("62 0A 82 01 38 83 02 3F 00 8A 01 05 9000")
FCP_EF = bytes.fromhex("62 0E 82 01 01 83 02 2F 01 80 02 00 20 8A 01 05 9000")
FCI_MF = bytes.fromhex("6F 04 83 02 3F 00 9000")
SELECT_MF_FCP, SELECT_EF_FCP = bytes.fromhex("00A40004023F00"), bytes.fromhex("00A40004022F01")
SELECT_MF_FCI = bytes.fromhex("00A40000023F00")
WELL_FORMED = {SELECT_MF_FCP: FCP_MF, SELECT_EF_FCP: FCP_EF, SELECT_MF_FCI: FCI_MF}


def test_a_well_formed_fcp_passes(vicc) -> None:
    (result,) = run(vicc(WELL_FORMED), "select-fcp").values()
    assert result.outcome is Outcome.PASS, result.reason
    assert result.reason.startswith("MF FCP 62 (82 83 8A), 2F01 FCP 62")


def test_a_card_without_a_file_system_is_not_applicable(vicc) -> None:
    by_id = run(vicc({bytes.fromhex("00A4000C023F00"): bytes.fromhex("6A82")}))
    for check_id in FILE_CHECKS[:-1]:
        assert by_id[check_id].outcome is Outcome.NOT_APPLICABLE
        assert by_id[check_id].reason == "no file system: SELECT MF (3F00) answered 6A82 " \
            "(file or application not found)"


@pytest.mark.parametrize(("rewrite", "check_id", "says"), [
    # another slice of the file than asked for
    ({bytes.fromhex("00B0000102"): b"AB\x90\x00"}, "read-binary", "the file has 4243 there"),
    # a short read with 9000 while bytes remain
    ({bytes.fromhex("00B0001003"): b"QR\x90\x00"}, "read-binary", "READ BINARY at 16, Le = 3"),
    # data from beyond the end of the file
    ({bytes.fromhex("00B0002001"): b"\x00\x90\x00"}, "read-past-end", "returned 00"),
    # 6Cxx naming a length that is not what is left
    ({bytes.fromhex("00B0001E05"): bytes.fromhex("6C03")}, "read-past-end", "6C03 names"),
    # the last bytes wrong
    ({bytes.fromhex("00B0001E05"): b"XY\x62\x82"}, "read-past-end", "the file ends with"),
    # the path selection does not work, or selects another file
    ({bytes.fromhex("00A4080C022F01"): bytes.fromhex("6A82")}, "select-path", "expected 9000"),
    # a file that does not exist selected
    ({bytes.fromhex("00A4000C02FFFF"): bytes.fromhex("9000")}, "select-fid", "must be refused"),
    # P2 = 0C asks for no data
    ({bytes.fromhex("00A4020C022F01"): bytes.fromhex("6201 9000")}, "select-fid", "returned 2"),
    # secure messaging read as plain
    ({bytes.fromhex("0CA4"): bytes.fromhex("9000")}, "secure-messaging-cla", "executed"),
    # FCP: malformed, naming another file, another size, the wrong template
    ({**WELL_FORMED, SELECT_MF_FCP: bytes.fromhex("62 05 83 02 3F 9000")}, "select-fcp",
     "not one well-formed BER-TLV"),
    ({**WELL_FORMED, SELECT_MF_FCP: bytes.fromhex("62 04 83 02 2F 01 9000")}, "select-fcp",
     "names file 2F01"),
    ({**WELL_FORMED, SELECT_EF_FCP: bytes.fromhex("62 08 83 02 2F 01 80 02 00 10 9000")},
     "select-fcp", "gives 16 bytes (tag 80), READ BINARY reads 32"),
    ({**WELL_FORMED, SELECT_MF_FCP: bytes.fromhex("6F 04 83 02 3F 00 9000")}, "select-fcp",
     "template 6F, expected 62"),
])
def test_the_file_checks_catch_a_card_that_breaks_a_rule(vicc, rewrite: dict[bytes, bytes],
                                                        check_id: str, says: str) -> None:
    by_id = run(vicc(rewrite), check_id)
    assert by_id[check_id].outcome is Outcome.FAIL, by_id[check_id].reason
    assert says in by_id[check_id].reason


def test_a_path_that_selects_another_file_fails(vicc) -> None:
    # P1 = 09 answered 9000 but the MF stays current: READ BINARY then reads nothing
    card = vicc(redirect={bytes.fromhex("00A4090C022F01"): bytes.fromhex("00A4000C023F00")})
    (result,) = run(card, "select-path").values()
    assert result.outcome is Outcome.FAIL
    assert "after SELECT path 2F01 (P1 = 09), READ BINARY reads other data" in result.reason


@pytest.mark.parametrize(("rewrite", "check_id", "outcome", "seen"), [
    # ISO 7816-4 allows 6Cxx with the bytes left: the re-issued read gets them
    ({bytes.fromhex("00B0001E05"): bytes.fromhex("6C02")}, "read-past-end", Outcome.PASS, None),
    # the right bytes, but 9000: no warning that Ne was not reached
    ({bytes.fromhex("00B0001E05"): b"_`\x90\x00"}, "read-past-end", Outcome.DEVIATION, 0x9000),
    # the end refused with another status word
    ({bytes.fromhex("00B0002001"): bytes.fromhex("6A86")}, "read-past-end", Outcome.DEVIATION,
     0x6A86),
    ({bytes.fromhex("00A4000C02FFFF"): bytes.fromhex("6A86")}, "select-fid", Outcome.DEVIATION,
     0x6A86),
    ({bytes.fromhex("08A4"): bytes.fromhex("6882"), bytes.fromhex("0CA4"): bytes.fromhex("6882")},
     "secure-messaging-cla", Outcome.PASS, None),
])
def test_what_the_standard_allows_passes_and_other_refusals_deviate(
        vicc, rewrite: dict[bytes, bytes], check_id: str, outcome: Outcome,
        seen: int | None) -> None:
    by_id = run(vicc(rewrite), check_id)
    assert by_id[check_id].outcome is outcome, by_id[check_id].reason
    assert by_id[check_id].sw_seen == seen
