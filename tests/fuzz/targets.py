"""The fuzz targets: one harness per parser or state machine that meets bytes from outside.

Each harness module has `run_one(data)` (one input: anything but its declared errors, or a
broken invariant, escapes as a finding) and `seeds()` (the seed corpus, kept in
tests/fuzz/corpus/<name>/ and checked equal by a test). `instrument` names the packages
atheris instruments for coverage: the code under test and the harness itself.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    harness: str
    instrument: tuple[str, ...]
    what: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.harness)

    @property
    def corpus(self) -> Path:
        return CORPUS / self.name


TARGETS = (
    Target("applet", "tests.fuzz.harness", ("card_applet", "tests.fuzz.harness"),
           "Applet.process: APDU decoding, chaining, every command, with a key holder"),
    Target("card_t1", "tests.fuzz.harness_card_t1",
           ("card_applet.t1", "tests.fuzz.harness_card_t1"),
           "T=1 block codec and the card's state machine (card_applet/t1.py)"),
    Target("reader_t1", "tests.fuzz.harness_reader_t1",
           ("terminal.t1", "card_applet.t1", "tests.fuzz.harness_reader_t1"),
           "the reader's T=1 against a scripted card (terminal/t1.py)"),
    Target("atr", "tests.fuzz.harness_atr",
           ("card_applet.atr", "card_applet.line", "terminal.serial", "tests.fuzz.harness_atr"),
           "ATR and PPS parsing and the reader's checks (card_applet/atr.py, line.py)"),
    Target("wire", "tests.fuzz.harness_wire",
           ("host.protocol.wire", "host.protocol.messages", "host.protocol.codec",
            "tests.fuzz.harness_wire"),
           "wire frames, typed messages, typed fields (host/protocol/wire.py, messages.py, "
           "codec.py)"),
    Target("envelope", "tests.fuzz.harness_envelope",
           ("host.protocol.envelope", "host.protocol.codec", "host.protocol.order",
            "tests.fuzz.harness_envelope"),
           "the order envelope, its header and a part's plaintext (host/protocol/envelope.py)"),
)
BY_NAME = {target.name: target for target in TARGETS}


def write_corpus() -> None:
    """Rewrite every seed corpus from its harness's `seeds()`."""
    for target in TARGETS:
        target.corpus.mkdir(parents=True, exist_ok=True)
        wanted = target.load().seeds()
        for old in target.corpus.iterdir():
            if old.name not in wanted:
                old.unlink()
        for name, data in wanted.items():
            (target.corpus / name).write_bytes(data)


if __name__ == "__main__":
    write_corpus()
