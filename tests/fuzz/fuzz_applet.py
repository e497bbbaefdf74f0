"""Coverage-guided fuzz target (atheris / libFuzzer) for Applet.process.

    .venv/bin/python tests/fuzz/fuzz_applet.py tests/fuzz/corpus -max_total_time=60

See harness.py for the input layout and the invariants; a broken invariant is an uncaught
`Finding`, which atheris reports as a crash with the input saved as crash-<sha1>.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

with atheris.instrument_imports(include=["card_applet", "tests.fuzz.harness"]):
    from tests.fuzz.harness import run_one


def main() -> None:
    atheris.Setup(sys.argv, run_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
