"""Hostile input: the seed corpus, the harness's own teeth, and a bounded atheris run.

The atheris run is coverage-guided (libFuzzer over instrumented card_applet) and bounded in
time (NETTX_FUZZ_SECONDS, default 20 s); any invariant broken is a crash, which fails the
test with the saved input.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from card_applet import applet as applet_module
from card_applet.sw import SW, CardError
from tests.conftest import IN_CI
from tests.fuzz.harness import SELECT, VERIFY, Finding, encode, run_one, seeds

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
FUZZ_SECONDS = int(os.environ.get("NETTX_FUZZ_SECONDS", "20"))


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.iterdir()))
def test_seed_corpus_input_keeps_every_invariant(name: str) -> None:
    run_one((CORPUS / name).read_bytes())


def test_seed_corpus_is_the_generated_one() -> None:
    assert {p.name: p.read_bytes() for p in CORPUS.iterdir()} == seeds()


def test_harness_reports_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: applet_module.Applet, cmd: object) -> bytes:
        raise ZeroDivisionError

    monkeypatch.setitem(applet_module._INTER_INDUSTRY, 0xCA, broken)
    with pytest.raises(Finding, match="6F00"):
        run_one(encode(1, bytes.fromhex("00CA00C200")))


def test_harness_reports_state_changed_by_a_rejected_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def half_done(self: applet_module.Applet, cmd: object) -> bytes:
        self._commit(self.state.with_(atc=self.state.atc + 1))
        raise CardError(SW.WRONG_DATA)

    monkeypatch.setitem(applet_module._INTER_INDUSTRY, 0xCA, half_done)
    with pytest.raises(Finding, match="persistent state changed"):
        run_one(encode(1, bytes.fromhex("00CA00C200")))


def test_harness_reports_a_response_longer_than_ne(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(applet_module.Applet, "_respond",
                        lambda self, data, le: data + b"\x90\x00")
    with pytest.raises(Finding, match="data bytes for Ne = 4"):
        run_one(encode(0, SELECT[:-1] + b"\x04"))


def test_harness_reports_data_for_a_command_without_le(monkeypatch: pytest.MonkeyPatch) -> None:
    # a case 3 SELECT (P2 = 00 asks for the FCI, but no Le): the data must wait for 61xx
    monkeypatch.setattr(applet_module.Applet, "_respond",
                        lambda self, data, le: data + b"\x90\x00")
    with pytest.raises(Finding, match="data bytes for Ne = 0"):
        run_one(encode(0, SELECT[:-1]))


def test_harness_ties_63cx_to_the_counter_of_the_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # VERIFY with a wrong PIN that spends a PUK try instead of a PIN try
    def verify(self: applet_module.Applet, cmd: object) -> bytes:
        self._commit(self.state.with_(puk_tries=self.state.puk_tries - 1))
        raise CardError(0x63C2)

    monkeypatch.setitem(applet_module._INTER_INDUSTRY, 0x20, verify)
    with pytest.raises(Finding, match="63C2 to INS 20 changed more than its pin_tries"):
        run_one(encode(1, VERIFY))


def test_harness_refuses_63cx_from_a_command_without_a_counter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def get_data(self: applet_module.Applet, cmd: object) -> bytes:
        self._commit(self.state.with_(pin_tries=self.state.pin_tries - 1))
        raise CardError(0x63C2)

    monkeypatch.setitem(applet_module._INTER_INDUSTRY, 0xCA, get_data)
    with pytest.raises(Finding, match="INS CA, which has no try counter"):
        run_one(encode(1, bytes.fromhex("00CA00C200")))


@pytest.fixture
def tracing() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


@pytest.mark.usefixtures("tracing")
def test_harness_reports_a_command_that_allocates_without_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def hoard(self: applet_module.Applet, cmd: object) -> bytes:
        return bytes(8 << 20)[:1]  # 8 MiB for one byte of answer

    monkeypatch.setitem(applet_module._INTER_INDUSTRY, 0xCA, hoard)
    with pytest.raises(Finding, match="allocated"):
        run_one(encode(1, bytes.fromhex("00CA00C200")))


@pytest.mark.usefixtures("tracing")
def test_seed_corpus_stays_within_the_allocation_bound() -> None:
    for data in seeds().values():
        run_one(data)


def test_atheris_bounded_run_finds_nothing(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        message = "atheris not installed (pip install -e '.[test]' brings it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path / "corpus"
    shutil.copytree(CORPUS, work)  # new inputs go to the copy: the repo corpus stays small
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_applet.py"), str(work), str(CORPUS),
         f"-max_total_time={FUZZ_SECONDS}", f"-artifact_prefix={tmp_path}/",
         "-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 120)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-",
                                                                               "timeout-",
                                                                               "oom-")))
    assert proc.returncode == 0 and not crashes, (crashes, proc.stderr[-4000:])
    done = re.search(r"Done (\d+) runs in (\d+) second", proc.stderr)
    assert done, proc.stderr[-2000:]
    runs, seconds = int(done.group(1)), int(done.group(2))
    assert runs > 1000
    print(f"atheris: {runs} runs in {seconds} s, corpus {len(list(work.iterdir()))} inputs")
