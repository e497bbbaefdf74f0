"""Run one fuzz target under atheris (libFuzzer, coverage-guided):

    .venv/bin/python tests/fuzz/fuzz.py TARGET [CORPUS_DIR ...] [-max_total_time=60 ...]

TARGET is a name from tests/fuzz/targets.py (applet, card_t1, reader_t1, atr, wire,
envelope); the other arguments go to libFuzzer. A finding is an uncaught exception, which
libFuzzer reports as a crash and saves as crash-<sha1> (see -artifact_prefix).
`python -m tests.fuzz.campaign` runs them all; `make fuzz` runs that.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from tests.fuzz.targets import BY_NAME  # the path above first; targets.py is not instrumented


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BY_NAME:
        sys.exit(f"usage: fuzz.py {{{','.join(BY_NAME)}}} [libFuzzer arguments]")
    target = BY_NAME[sys.argv[1]]
    with atheris.instrument_imports(include=list(target.instrument)):
        harness = target.load()
    atheris.Setup([sys.argv[0], *sys.argv[2:]], harness.run_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
