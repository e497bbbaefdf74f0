"""Run fuzz targets for a bounded time each and report executions per target.

    .venv/bin/python -m tests.fuzz.campaign [--seconds 300] [--work .fuzz] [TARGET ...]

Each target starts from its seed corpus (tests/fuzz/corpus/<target>/) and a work corpus of
its own under --work, which keeps what earlier campaigns found; new inputs go to the work
corpus only, so the repository's stays small. Crashes, timeouts and OOMs are saved in the
work directory as <target>/artifacts/crash-<sha1>: add a real one to the seed corpus (as a
`seeds()` entry) with a regression test when it is fixed. Exits non-zero on any finding.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.targets import BY_NAME, TARGETS, Target

RUNNER = Path(__file__).resolve().parent / "fuzz.py"
FINDINGS = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


@dataclass(frozen=True, slots=True)
class Result:
    target: str
    runs: int
    seconds: int
    corpus: int  # inputs in the work corpus afterwards
    findings: tuple[Path, ...]
    returncode: int
    log: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.findings and self.runs > 0


def run_target(target: Target, seconds: int, work: Path, *, max_len: int = 4096) -> Result:
    corpus, artifacts = work / target.name / "corpus", work / target.name / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    proc = subprocess.run(
        [sys.executable, str(RUNNER), target.name, str(corpus), str(target.corpus),
         f"-max_total_time={seconds}", f"-artifact_prefix={artifacts}/",
         "-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048", f"-max_len={max_len}"],
        capture_output=True, text=True, timeout=seconds + 180, check=False)
    done = re.search(r"Done (\d+) runs in (\d+) second", proc.stderr)
    findings = tuple(sorted(p for p in set(artifacts.iterdir()) - before
                            if p.name.startswith(FINDINGS)))
    return Result(target.name, int(done.group(1)) if done else 0,
                  int(done.group(2)) if done else 0, len(list(corpus.iterdir())), findings,
                  proc.returncode, proc.stderr[-4000:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300, help="per target (default 300)")
    parser.add_argument("--work", type=Path, default=Path(".fuzz"),
                        help="work corpora and findings (default .fuzz)")
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"default: all ({', '.join(BY_NAME)})")
    args = parser.parse_args(argv)
    if unknown := [name for name in args.targets if name not in BY_NAME]:
        parser.error(f"unknown target {', '.join(unknown)} (choose from {', '.join(BY_NAME)})")
    chosen = [BY_NAME[name] for name in args.targets] or list(TARGETS)
    print(f"{'target':<10} {'runs':>12} {'seconds':>8} {'runs/s':>8} {'corpus':>7}  findings")
    failed = False
    for target in chosen:
        result = run_target(target, args.seconds, args.work)
        rate = result.runs // max(result.seconds, 1)
        found = ", ".join(str(p) for p in result.findings) or (
            "none" if result.ok else f"exit {result.returncode}")
        print(f"{target.name:<10} {result.runs:>12,} {result.seconds:>8} {rate:>8,} "
              f"{result.corpus:>7}  {found}", flush=True)
        if not result.ok:
            failed = True
            print(result.log, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
