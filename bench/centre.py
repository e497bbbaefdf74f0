"""The trusted centre at large k: `authority init` and `authority issue` of 64 rows as whole
commands, beside the floor of issuance, measured in the same run.

    .venv/bin/python bench/centre.py [--k 512 2048 4096] [--runs 3] [--runs-large 1]
                                     [--code DIR]

For each k, in a temporary home (mode 0700):

  init      `python -m host.cli authority init --k K --force` (fresh master, fsynced)
  issue 64  `python -m host.cli authority issue` of 64 new identifiers (row files in a
            temporary --out directory, removed after each run)
  startup   `python -m host.cli --help`: the interpreter and the imports, in every command
  floor     in this process: reading the master file's bytes (it is in the page cache, as
            for the command) plus one python-flint product V D, V the 64 x k Vandermonde
            rows and D the whole symmetric k x k master as a flint integer matrix (fmpz_mat:
            building it is left out of the time, and is slower than the product)

Wall time is the median of the runs (--runs, or --runs-large for k >= 4096); peak RSS is the
child's own ru_maxrss from wait4 (the largest over the runs). "x floor" = issue / floor; the
goal is issue within 1.5x of the floor and memory under 3x the master file's size.
--code DIR runs the commands from another checkout (PYTHONPATH=DIR), for a before/after.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import flint  # noqa: E402

from bench.meters import machine_line, python_line, results_console, results_table  # noqa: E402
from card_applet import blom  # noqa: E402
from host.centre.master import Master  # noqa: E402

ROWS = 64


@dataclass
class Measure:
    seconds: list[float] = field(default_factory=list)
    peak_kb: int = 0

    def add(self, seconds: float, peak_kb: int) -> None:
        self.seconds.append(seconds)
        self.peak_kb = max(self.peak_kb, peak_kb)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


# Linux carries the RSS high-water mark of the image a process replaces across exec, so a
# child forked from this (large) process would report our size as its peak. This small
# interpreter forks the command from its own fresh image and reports the command's wait4.
WRAPPER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
seconds, code = time.perf_counter() - start, os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as out:
    out.write(f"{seconds} {usage.ru_maxrss} {code}")
"""


def command(code: Path, *args: str | Path) -> tuple[float, int]:
    """Run `python -m host.cli ARGS` from `code`; (wall seconds, peak RSS KiB)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    with tempfile.NamedTemporaryFile("r", suffix=".usage") as report:
        child = subprocess.run([sys.executable, "-c", WRAPPER, report.name, sys.executable,
                                "-m", "host.cli", *map(str, args)], cwd=code, env=env,
                               capture_output=True, check=False)
        seconds, peak_kb, code_ = report.read().split()
    if int(code_) != 0 or child.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:2]))} failed: "
                           f"{child.stderr.decode()[-500:]}{child.stdout.decode()[-200:]}")
    return float(seconds), int(peak_kb)


def master_file(home: Path) -> Path:
    for name in ("master.bin", "master.json"):
        if (home / "authority" / name).exists():
            return home / "authority" / name
    raise RuntimeError("no master file")


def floor_product(master: Master, runs: int, path: Path) -> Measure:
    """Read the file's bytes + one V D product, D prebuilt (not timed)."""
    k = master.k
    d = flint.fmpz_mat(k, k, [master.entry(i, j) for i in range(k) for j in range(k)])
    out = Measure()
    for _ in range(runs):
        xs = [secrets.randbelow(blom.P) for _ in range(ROWS)]
        powers = []
        for x in xs:
            acc = 1
            for _ in range(k):
                powers.append(acc)
                acc = acc * x % blom.P
        v = flint.fmpz_mat(ROWS, k, powers)
        start = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            data = f.read()
        _ = v * d
        out.add(time.perf_counter() - start, 0)
        del data
    return out


def bench_k(k: int, runs: int, code: Path, tmp: Path, say) -> dict[str, object]:
    home = tmp / f"home-{k}"
    home.mkdir(mode=0o700)
    init, issue, startup = Measure(), Measure(), Measure()
    for _ in range(runs):
        say(f"k = {k}: init")
        init.add(*command(code, "authority", "init", "--home", home, "--k", str(k), "--force"))
    for r in range(runs):
        say(f"k = {k}: issue {ROWS} rows, run {r + 1}/{runs}")
        out = tmp / f"rows-{k}-{r}"
        ids = [f"holder:{r}-{n}@bench.example" for n in range(ROWS)]
        issue.add(*command(code, "authority", "issue", "--home", home, "--out", out, *ids))
        shutil.rmtree(out)
        startup.add(*command(code, "--help"))
    path = master_file(home)
    size = path.stat().st_size
    say(f"k = {k}: floor (building D as a flint matrix first)")
    master = Master.read(path)
    floor = floor_product(master, runs, path)
    shutil.rmtree(home)
    return {"k": k, "runs": runs, "size": size, "init": init, "issue": issue,
            "startup": startup, "floor": floor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--runs", type=int, default=3, help="runs per k below 4096 (3)")
    parser.add_argument("--runs-large", type=int, default=1, help="runs at k >= 4096 (1)")
    parser.add_argument("--code", type=Path, default=REPO,
                        help="checkout whose commands are measured (this one)")
    args = parser.parse_args(argv)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    results = []
    with tempfile.TemporaryDirectory(prefix="nettx-centre-") as tmp:
        for k in args.k:
            runs = args.runs_large if k >= 4096 else args.runs
            results.append(bench_k(k, runs, args.code.resolve(), Path(tmp), say))
    table = results_table(
        f"the centre: whole commands against the issuance floor ({args.code.resolve()})",
        ("k", "runs", "master file MB", "init s", "init peak MB", "issue 64 s",
         "issue peak MB", "peak / file", "startup s", "floor s", "issue / floor",
         "(issue - startup) / floor"),
        caption="median wall time of the runs; peak = the child's max RSS (wait4). floor = "
                "read the master file + one flint product V (64 x k) D (k x k), D prebuilt. "
                "startup = `python -m host.cli --help`, part of every command.")
    for r in results:
        init, issue, startup, floor = r["init"], r["issue"], r["startup"], r["floor"]
        mb = r["size"] / 2**20  # type: ignore[operator]
        table.add_row(str(r["k"]), str(r["runs"]), f"{mb:,.1f}", f"{init.median:.2f}",
                      f"{init.peak_kb / 1024:,.0f}", f"{issue.median:.2f}",
                      f"{issue.peak_kb / 1024:,.0f}", f"{issue.peak_kb / 1024 / mb:.1f}",
                      f"{startup.median:.2f}", f"{floor.median:.2f}",
                      f"{issue.median / floor.median:.2f}",
                      f"{(issue.median - startup.median) / floor.median:.2f}")
    out = results_console(150)
    out.print(python_line())
    out.print(machine_line(" ".join(Path("/proc/loadavg").read_text().split()[:3])))
    out.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
