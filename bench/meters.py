"""What the benchmarks measure with: back-to-back runs, medians and nearest-rank percentiles,
per-thread tallies, CPU time per process from /proc (no psutil), and the table they print.

Shared by bench/apdu.py, bench/orders.py, bench/slowloris.py and bench/profile_card.py, so
that two rows measured by different scripts mean the same thing.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table

T = TypeVar("T")
R = TypeVar("R")
C = TypeVar("C")


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def percentile_ms(ns: Iterable[int], q: float) -> float:
    """Nearest-rank percentile of ns values, in ms."""
    return percentile(ns, q) / 1e6


def median_ms(ns: Sequence[int]) -> float:
    return statistics.median(ns) / 1e6


def spread(values: Sequence[float], fmt: str = ",.0f") -> tuple[str, str]:
    """The median of runs and their range, as two cells: "1,234" and "1,100–1,300"."""
    return (format(statistics.median(values), fmt),
            f"{format(min(values), fmt)}–{format(max(values), fmt)}")


# -- running ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run: operations per second, and each operation's ns."""

    rate: float
    latencies: list[int]


def back_to_back(operation: Callable[[T], R], argument: T, seconds: float,
                 check: Callable[[R], object] | None = None) -> Run:
    """`operation(argument)` again and again for `seconds`, each timed from the end of the one
    before, so no gap between them goes unmeasured; `check` sees each result (and may raise)."""
    clock = time.perf_counter_ns
    latencies: list[int] = []
    start = now = clock()
    end = start + int(seconds * 1e9)
    while now < end:
        result = operation(argument)
        done = clock()
        if check is not None:
            check(result)
        latencies.append(done - now)
        now = done
    return Run(len(latencies) / ((now - start) / 1e9), latencies)


def interleaved(runs: int, cells: Sequence[C], run_one: Callable[[C], object],
                say: Callable[[int], object] = lambda _r: None) -> None:
    """Run 1 of every cell, then run 2, ...: background load hits every cell alike."""
    for r in range(runs):
        say(r)
        for cell in cells:
            run_one(cell)


class Tally(threading.local):
    """Per thread: named sums (ns spent somewhere, operations counted) since the last take()."""

    def __init__(self) -> None:
        self.sums: dict[str, int] = {}

    def add(self, name: str, value: int = 1) -> None:
        self.sums[name] = self.sums.get(name, 0) + value

    def take(self) -> dict[str, int]:
        sums, self.sums = self.sums, {}
        return sums


# -- CPU per process, from /proc --------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CPUS = os.cpu_count() or 1


def thread_ns(pid: int) -> dict[int, tuple[int, int]]:
    """(on CPU, runnable but waiting for a CPU) in nanoseconds, per thread id, for the
    threads of `pid` alive now (/proc/PID/task/*/schedstat); {} where /proc has none."""
    out: dict[int, tuple[int, int]] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            run, wait, _slices = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        out[int(task.name)] = (int(run), int(wait))
    return out


def sched_seconds(pid: int) -> tuple[float, float]:
    """(on CPU, runnable but waiting for a CPU) in seconds, summed over the threads of `pid`
    that are alive now; (0, 0) where /proc has no schedstat."""
    threads = thread_ns(pid).values()
    return sum(run for run, _ in threads) / 1e9, sum(wait for _, wait in threads) / 1e9


def cpu_us_samples(operation: Callable[[], object], iterations: int, runs: int) -> list[float]:
    """CPU µs per call of `operation`, one sample per run of `iterations` calls
    (time.process_time: this process's CPU, whatever else the machine runs)."""
    samples = []
    for _ in range(runs):
        started = time.process_time()
        for _ in range(iterations):
            operation()
        samples.append((time.process_time() - started) / iterations * 1e6)
    return samples


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name (field 2) may hold spaces: the parent is after its ")"
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


def tree_seconds(pid: int) -> float:
    """CPU seconds of a server and its worker processes (a database server: its postmaster
    and backends): `pid` and its live children (schedstat), plus the children it has reaped
    (the cutime + cstime of /proc/PID/stat, in clock ticks), so backends that came and went
    during a window count too."""
    total = sched_seconds(pid)[0] + sum(sched_seconds(child)[0] for child in children(pid))
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[13]) + int(fields[14])) / TICK  # cutime, cstime (fields 16, 17)
    except (OSError, ValueError, IndexError):
        pass
    return total


class TreeCpuMeter:
    """CPU % of a process tree over a window (100 % = one CPU), under one name."""

    def __init__(self, name: str, pid: int) -> None:
        self.name, self.pid = name, pid
        self.t0 = self.s0 = 0.0

    def start(self) -> None:
        self.t0, self.s0 = time.perf_counter(), tree_seconds(self.pid)

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        return {self.name: 100 * (tree_seconds(self.pid) - self.s0) / wall}


def box_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal
    return (total - idle) / TICK, total / TICK


class CpuMeter:
    """CPU % and run-queue wait % of each process over a window (100 % = one CPU), and how
    busy the whole machine was (so load from outside the bench shows): NAME, "NAME wait",
    "box" and "others" in what stop() returns."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.t0 = 0.0
        self.s0: dict[str, tuple[float, float]] = {}
        self.b0 = (0.0, 0.0)

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.s0 = {name: sched_seconds(pid) for name, pid in self.pids.items()}
        self.b0 = box_seconds()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        out = {}
        for name, pid in self.pids.items():
            on_cpu, waiting = sched_seconds(pid)
            out[name] = 100 * (on_cpu - self.s0[name][0]) / wall
            out[name + " wait"] = 100 * (waiting - self.s0[name][1]) / wall
        busy, total = box_seconds()
        if total > self.b0[1]:
            out["box"] = 100 * CPUS * (busy - self.b0[0]) / (total - self.b0[1])
            out["others"] = max(0.0, out["box"] - sum(out[n] for n in self.pids))
        return out


def cpu_ms_per_operation(cpu_pct: float, rate: float) -> float:
    """A process's CPU % (100 = one CPU) over a window at `rate` operations/s, as CPU ms per
    operation."""
    return 10 * cpu_pct / rate if rate else 0.0


# -- the printout -----------------------------------------------------------------------------


def python_line() -> str:
    return f"Python {platform.python_version()} ({platform.python_implementation()})"


def machine_line(load: str) -> str:
    return f"CPUs: {os.cpu_count()} | load avg: {load} | {platform.system()} {platform.release()}"


def results_table(title: str, columns: Sequence[str], *, caption: str | None = None,
          left: Sequence[str] = (), no_wrap: bool = False) -> Table:
    """A results table: the columns in `left` (labels) left-aligned, the numbers right."""
    result = Table(title=title, caption=caption, caption_justify="left")
    for name in columns:
        result.add_column(name, justify="left" if name in left else "right", no_wrap=no_wrap)
    return result


def in_sections(table: Table, items: Iterable[C], key: Callable[[C], object]) -> Iterator[C]:
    """Each of `items`, with a rule added to `table` wherever `key` changes between two."""
    previous: list[object] = []
    for item in items:
        if previous and key(item) != previous[0]:
            table.add_section()
        previous[:] = [key(item)]
        yield item


def results_console(width: int) -> Console:
    """stdout at least `width` columns wide, so the table is not folded through a pipe."""
    return Console(highlight=False, width=max(Console().width, width))
