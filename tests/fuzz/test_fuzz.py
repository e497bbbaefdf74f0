"""Hostile input: the seed corpora, the harnesses' own teeth, and a bounded atheris run of
every target (tests/fuzz/targets.py).

The atheris runs are coverage-guided (libFuzzer over the instrumented modules) and bounded in
time (NETTX_FUZZ_SECONDS per target, default 10 s: the six fit in about a minute and a half);
any invariant broken or undeclared error escaping is a crash, which fails the test with the
saved input. `make fuzz` runs the same targets longer.
"""

from __future__ import annotations

import importlib.util
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from card_applet import applet as applet_module
from card_applet import keys
from card_applet import t1 as card_t1_module
from card_applet.sw import SW, CardError
from host.protocol import envelope as envelope_module
from host.protocol import wire as wire_module
from terminal import t1 as terminal_t1_module
from tests.conftest import unavailable
from tests.fuzz import harness_card_t1, harness_envelope, harness_reader_t1, harness_wire
from tests.fuzz.campaign import run_target
from tests.fuzz.harness import SELECT, VERIFY, Finding, Keyed, encode, run_one, sealing, seeds
from tests.fuzz.targets import TARGETS, Target

FUZZ_SECONDS = int(os.environ.get("NETTX_FUZZ_SECONDS", "10"))
SEED_INPUTS = [(target, path.name) for target in TARGETS
               for path in sorted(target.corpus.iterdir())]


@pytest.mark.parametrize(("target", "name"), SEED_INPUTS,
                         ids=[f"{t.name}/{n}" for t, n in SEED_INPUTS])
def test_seed_corpus_input_keeps_every_invariant(target: Target, name: str) -> None:
    target.load().run_one((target.corpus / name).read_bytes())


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_seed_corpus_is_the_generated_one(target: Target) -> None:
    # python -m tests.fuzz.targets rewrites them
    assert {p.name: p.read_bytes() for p in target.corpus.iterdir()} == target.load().seeds()


def test_harness_reports_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: applet_module.Applet, cmd: object) -> bytes:
        raise ZeroDivisionError

    monkeypatch.setitem(applet_module._INTER_INDUSTRY, 0xCA, broken)
    with pytest.raises(Finding, match="6F00"):
        run_one(encode(1, bytes.fromhex("00CA00C200")))


def test_harness_reports_state_changed_by_a_rejected_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def half_done(self: applet_module.Applet, cmd: object) -> bytes:
        self._commit(self.state.with_(atc_reserved=self.state.atc_reserved + 1))
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


# -- the key holder reaches what the card guards with keys -------------------------------------


def test_key_holder_personalises_a_blank_card() -> None:
    executed: list[tuple[bytes, bytes]] = []
    original = applet_module.Applet.process

    def spy(self: applet_module.Applet, raw: bytes) -> bytes:
        response = original(self, raw)
        executed.append((raw[:2], response[-2:]))
        return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(applet_module.Applet, "process", spy)
        run_one(seeds()["perso-keyed"])
    # STORE DATA x 5 (holder, row, PIN, PUK, card authentication key) and SET STATUS pass
    # their MACs; the card then enciphers for the peer
    assert executed.count((b"\x80\xe2", b"\x90\x00")) == 5
    assert (b"\x80\xf0", b"\x90\x00") in executed
    assert (b"\x00\x2a", b"\x90\x00") in executed


def card_keys(monkeypatch: pytest.MonkeyPatch, **planted: object) -> None:
    """Give the applet (only) a keys module with `planted` functions in it."""
    monkeypatch.setattr(applet_module, "keys", SimpleNamespace(**{**vars(keys), **planted}))


def test_key_holder_reports_a_forged_box_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    # a card that skips the tag check: DECIPHER of an altered box answers 9000
    card_keys(monkeypatch, open_sealed=lambda key, sealed, aad: (1, sealed[17:-16]))
    with pytest.raises(Finding, match="DECIPHER accepted a box altered"):
        run_one(encode(3, Keyed(2, sealing(1 | 20 << 1, b"", b"", b"secret"))))


def test_key_holder_reports_any_answer_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(applet_module.hmac, "compare_digest", lambda a, b: True)
    with pytest.raises(Finding, match="EXTERNAL AUTHENTICATE accepted a wrong answer"):
        run_one(encode(3, bytes.fromhex("0084000008"), Keyed(3, b"\x01")))


def test_key_holder_reports_a_box_the_peer_cannot_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # a card that seals under the other direction's key (a reflection bug)
    card_keys(monkeypatch, seal_key=lambda pair, sender, receiver, context: keys.seal_key(
        pair, receiver, sender, context))
    with pytest.raises(Finding, match="ENCIPHER: the peer cannot open the box"):
        run_one(encode(3, Keyed(4, sealing(0, b"", b"", b"hello"))))


# -- the other harnesses have teeth too --------------------------------------------------------


def test_card_t1_harness_reports_an_escaping_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: card_t1_module.T1Card, block: card_t1_module.Block) -> object:
        raise IndexError("planted")

    monkeypatch.setattr(card_t1_module.T1Card, "_on_r", broken)
    with pytest.raises(IndexError):
        harness_card_t1.run_one(harness_card_t1.seeds()["chain-out"])


def test_reader_t1_harness_reports_a_reader_that_never_stops() -> None:
    # with the S(WTX) bound lifted, a card asking forever keeps the reader listening
    data = harness_reader_t1.seeds()["wtx-forever"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(harness_reader_t1, "MAX_WTX_WAIT", float("inf"))
        with pytest.raises(harness_reader_t1.Finding, match="listened 20000 times"):
            harness_reader_t1.run_one(data)


def test_reader_t1_harness_checks_what_the_terminal_sends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a terminal that ignores the card's new IFSC
    monkeypatch.setattr(terminal_t1_module.T1Terminal, "_part",
                        lambda self, apdu, start: card_t1_module.Block.i(
                            self.ns, apdu[start : start + 200], more=start + 200 < len(apdu)))
    with pytest.raises(harness_reader_t1.Finding, match="I-block of 200 bytes for IFSC"):
        harness_reader_t1.run_one(harness_reader_t1.seeds()["ifs-mid-chain"])


def test_wire_harness_reports_an_undeclared_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(cls: type, frame: bytes) -> object:
        raise KeyError("type")

    monkeypatch.setattr(wire_module.RawMessage, "parse", classmethod(parse))
    with pytest.raises(KeyError):
        harness_wire.run_one(harness_wire.seeds()["form-request"])


def test_wire_harness_reports_chunking_that_changes_frames(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def feed(self: wire_module.FrameDecoder, data: bytes) -> list[bytes]:
        return [bytes(data)] if data else []  # one frame per read: what TCP never promises

    monkeypatch.setattr(wire_module.FrameDecoder, "feed", feed)
    with pytest.raises(harness_wire.Finding, match="decode differently"):
        harness_wire.run_one(harness_wire.seeds()["two-frames"])


def test_envelope_harness_reports_a_header_in_two_encodings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a parser that forgot the deterministic-encoding check: any encoding of the header passes
    monkeypatch.setattr(envelope_module.Header, "from_bytes",
                        classmethod(lambda cls, raw: harness_envelope.HEADER))
    with pytest.raises(harness_envelope.Finding, match="not its own deterministic encoding"):
        harness_envelope.run_one(harness_envelope.seeds()["header-not-canonical"])


# -- the bounded runs --------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_atheris_bounded_run_finds_nothing(target: Target, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        unavailable("atheris not installed (pip install -e '.[test]' brings it)")
    result = run_target(target, FUZZ_SECONDS, tmp_path)
    assert result.ok, ([p.name for p in result.findings], result.returncode, result.log)
    assert result.runs > 100, result.log
    print(f"atheris {target.name}: {result.runs} runs in {result.seconds} s, "
          f"corpus {result.corpus} inputs")
