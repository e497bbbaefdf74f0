"""The trusted centre at large k: `authority init` and `authority issue` of 64 rows as whole
commands, beside the floors of issuance, measured in the same run.

    .venv/bin/python bench/centre.py [--k 512 2048 4096] [--runs 3] [--runs-large 1]
                                     [--code DIR] [--baseline DIR]

For each k, in a temporary home (mode 0700):

  init           `python -m host.cli authority init --k K --force` (fresh master, fsynced)
  issue 64       `python -m host.cli authority issue` of 64 new identifiers (row files in a
                 temporary --out directory, removed after each run)
  python+flint   `python -c "import flint"`: what a process that issues rows with flint pays
                 (CPU time, peak RSS)
  python+numpy   `python -c "import numpy"` (one BLAS thread, as the command loads it): what
                 the command's issuance pays before any work (CPU time, peak RSS)
  cli start      `python -m host.cli authority issue --help`: the interpreter and the
                 imports on the command's path (CPU time)
  floor, process bench/centre_floor.py, a standalone program (flint and the standard library
                 only) that reads the master file, computes the same 64 rows with flint
                 (each element converted to a flint integer once) and writes the same 64 row
                 files (checked byte for byte against the command's, an independent check
                 of its arithmetic); timed as the command is
  floor, in-process  in this process: reading the master file's bytes (in the page cache,
                 as for the command) plus one python-flint product of the 64 x k
                 Vandermonde rows V with D, the whole symmetric k x k master as a flint
                 integer matrix, prebuilt (not timed); the faster of V D and (D V^T)^T

Wall and CPU time (user + system, the child's own from wait4) are the medians of the runs
(--runs, or --runs-large for k >= 4096); peak RSS is the child's own ru_maxrss from wait4 (the
largest over the runs). On a machine shared with other work, wall time swings with the load;
CPU time much less, so the ratios are given in both. The goal (issue within 1.5x of
reading the master plus the flint product) is "/ in-process"; "/ process" compares the
command with a process doing the same job and nothing else, so the interpreter, the import
of flint, the conversion of the file's bytes into flint integers and the durable writes are
on both sides. Memory's goal is "peak / file" under 3. Peak RSS includes the interpreter and
its libraries (python + numpy alone is about 31 MB, more than a k = 512 master's 4 MB), so
"(peak - python+numpy) / file" gives the command's own increment over that baseline.
--code DIR runs the commands from another checkout (PYTHONPATH=DIR); --baseline DIR adds a
second checkout, its commands alternating with --code's run by run on the same master, so a
before/after sees the same load.
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
    cpu: list[float] = field(default_factory=list)
    peak_kb: int = 0

    def add(self, seconds: float, cpu: float, peak_kb: int) -> None:
        self.seconds.append(seconds)
        self.cpu.append(cpu)
        self.peak_kb = max(self.peak_kb, peak_kb)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


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
    out.write(f"{seconds} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss} {code}")
"""


FLOOR = Path(__file__).resolve().with_name("centre_floor.py")
# numpy as host.centre.issuance loads it: one BLAS thread
IMPORT_NUMPY = "import os; os.environ.setdefault('OPENBLAS_NUM_THREADS', '1'); import numpy"


def timed(code: Path, *argv: str | Path) -> tuple[float, float, int]:
    """Run `python ARGV` from `code` under the wrapper; (wall seconds, CPU seconds, peak RSS
    KiB), CPU and RSS the child's own from wait4."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    with tempfile.NamedTemporaryFile("r", suffix=".usage") as report:
        child = subprocess.run([sys.executable, "-c", WRAPPER, report.name, sys.executable,
                                *map(str, argv)], cwd=code, env=env,
                               capture_output=True, check=False)
        seconds, cpu, peak_kb, code_ = report.read().split()
    if int(code_) != 0 or child.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:3]))} failed: "
                           f"{child.stderr.decode()[-500:]}{child.stdout.decode()[-200:]}")
    return float(seconds), float(cpu), int(peak_kb)


def command(code: Path, *args: str | Path) -> tuple[float, float, int]:
    """Run `python -m host.cli ARGS` from `code`; (wall seconds, peak RSS KiB)."""
    return timed(code, "-m", "host.cli", *args)


def master_file(home: Path) -> Path:
    for name in ("master.bin", "master.json"):
        if (home / "authority" / name).exists():
            return home / "authority" / name
    raise RuntimeError("no master file")


def floor_product(master: Master, runs: int, path: Path) -> Measure:
    """Read the file's bytes + one product V D, D prebuilt (not timed). D is symmetric, so
    V D = (D V^T)^T, which flint computes faster at large k: each run times both and keeps
    the faster, so the floor is the least flint takes."""
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
        vt = v.transpose()
        best = []
        for left, right in ((v, d), (d, vt)):
            start, cpu = time.perf_counter(), time.process_time()
            with open(path, "rb", buffering=0) as f:
                data = f.read()
            product = left * right
            if left is d:
                product = product.transpose()
            best.append((time.perf_counter() - start, time.process_time() - cpu))
            del data
        out.add(*min(best), 0)
    return out


def same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()) or any(
            (a / n).read_bytes() != (b / n).read_bytes() for n in names):
        raise RuntimeError(f"the floor's row files ({b}) differ from the command's ({a})")


@dataclass
class Checkout:
    """One checkout's commands at one k."""

    name: str
    code: Path
    init: Measure = field(default_factory=Measure)
    issue: Measure = field(default_factory=Measure)
    cli: Measure = field(default_factory=Measure)


def bench_k(k: int, runs: int, checkouts: list[Checkout], tmp: Path, say,
            ) -> dict[str, object]:
    """Every checkout's commands, the process floor and the interpreter, alternating run by
    run (the machine's load falls on all of them alike), on one master."""
    home = tmp / f"home-{k}"
    home.mkdir(mode=0o700)
    python, numpy, process = Measure(), Measure(), Measure()
    for r in range(runs):
        for c in checkouts:
            say(f"k = {k}: init ({c.name}), run {r + 1}/{runs}")
            c.init.add(*command(c.code, "authority", "init", "--home", home, "--k", str(k),
                                "--force"))
    path = master_file(home)
    for r in range(runs):
        say(f"k = {k}: issue {ROWS} rows, the process floor, start-up; run {r + 1}/{runs}")
        floor_out = tmp / f"floor-{k}-{r}"
        for n, c in enumerate(checkouts):
            out = tmp / f"rows-{k}-{r}-{n}"
            ids = [f"holder:{r}-{n}-{i}@bench.example" for i in range(ROWS)]
            c.issue.add(*command(c.code, "authority", "issue", "--home", home, "--out", out,
                                 *ids))
            if n == 0:
                process.add(*timed(c.code, FLOOR, path, floor_out, *ids))
                same_files(out, floor_out)
                shutil.rmtree(floor_out)
            shutil.rmtree(out)
            c.cli.add(*command(c.code, "authority", "issue", "--help"))
        python.add(*timed(checkouts[0].code, "-c", "import flint"))
        numpy.add(*timed(checkouts[0].code, "-c", IMPORT_NUMPY))
    size = path.stat().st_size
    say(f"k = {k}: in-process floor (building D as a flint matrix first)")
    master = Master.read(path)
    floor = floor_product(master, runs, path)
    shutil.rmtree(home)
    return {"k": k, "runs": runs, "size": size, "checkouts": checkouts, "python": python,
            "numpy": numpy, "process": process, "floor": floor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--runs", type=int, default=3, help="runs per k below 4096 (3)")
    parser.add_argument("--runs-large", type=int, default=1, help="runs at k >= 4096 (1)")
    parser.add_argument("--code", type=Path, default=REPO,
                        help="checkout whose commands are measured (this one)")
    parser.add_argument("--baseline", type=Path,
                        help="another checkout measured in the same run, alternating with "
                             "--code run by run (a before/after on a shared machine)")
    args = parser.parse_args(argv)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    results = []
    with tempfile.TemporaryDirectory(prefix="nettx-centre-") as tmp:
        for k in args.k:
            runs = args.runs_large if k >= 4096 else args.runs
            checkouts = [Checkout("code", args.code.resolve())]
            if args.baseline:
                checkouts.append(Checkout("baseline", args.baseline.resolve()))
            results.append(bench_k(k, runs, checkouts, Path(tmp), say))
    title = f"the centre: whole commands against the issuance floors ({args.code.resolve()}"
    title += f"; baseline {args.baseline.resolve()})" if args.baseline else ")"
    table = results_table(
        title,
        ("k", "code", "runs", "master MB", "init s", "issue 64 s", "issue CPU s",
         "issue peak MB", "peak / file", "(peak - python+numpy) / file",
         "python + flint CPU s", "python + flint peak MB", "python + numpy CPU s",
         "python + numpy peak MB", "cli start CPU s",
         "floor, process s", "floor, process CPU s", "floor, process peak MB",
         "floor, in-process s", "issue / process floor", "issue / in-process floor",
         "CPU: issue / process floor", "CPU: issue / in-process floor"),
        caption="median of the runs; wall time unless CPU (the child's user + system time "
                "from wait4; the in-process floor's process time); peak = the child's max RSS "
                "(wait4). floor, in-process = read the master file + one flint product V (64 x "
                "k) D (k x k), D prebuilt: the goal's floor. floor, process = "
                "bench/centre_floor.py, the same job (read, convert, product, 64 durable row "
                "files, flint's way) with nothing else. python + flint = `python -c 'import "
                "flint'`, python + numpy = `python -c 'import numpy'` (their peak RSS is the "
                "interpreter's baseline in every peak); cli start = `python -m host.cli "
                "authority issue --help`. Floors and python + flint / numpy are measured once "
                "for all checkouts.")
    for r in results:
        floor, python, numpy, process = r["floor"], r["python"], r["numpy"], r["process"]
        mb = r["size"] / 2**20  # type: ignore[operator]
        for c in r["checkouts"]:  # type: ignore[attr-defined]
            issue = c.issue
            table.add_row(str(r["k"]), c.name, str(r["runs"]), f"{mb:,.1f}",
                          f"{c.init.median:.2f}", f"{issue.median:.2f}",
                          f"{issue.cpu_median:.2f}", f"{issue.peak_kb / 1024:,.0f}",
                          f"{issue.peak_kb / 1024 / mb:.1f}",
                          f"{(issue.peak_kb - numpy.peak_kb) / 1024 / mb:.1f}",
                          f"{python.cpu_median:.3f}", f"{python.peak_kb / 1024:,.0f}",
                          f"{numpy.cpu_median:.3f}", f"{numpy.peak_kb / 1024:,.0f}",
                          f"{c.cli.cpu_median:.3f}", f"{process.median:.2f}",
                          f"{process.cpu_median:.2f}", f"{process.peak_kb / 1024:,.0f}",
                          f"{floor.median:.2f}", f"{issue.median / process.median:.2f}",
                          f"{issue.median / floor.median:.2f}",
                          f"{issue.cpu_median / process.cpu_median:.2f}",
                          f"{issue.cpu_median / floor.cpu_median:.2f}")
    out = results_console(250)
    out.print(python_line())
    out.print(machine_line(" ".join(Path("/proc/loadavg").read_text().split()[:3])))
    out.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
