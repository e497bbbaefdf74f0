"""The holders' load on a shop, and what it records: one timed order, a block of orders back
to back, C holders at once for a window.

What is measured is a parameter: a `Shop` (nettx's three party processes, or a no-work floor
with the same processes and round trips) hands out `Buyer`s and names its processes; the
load code knows nothing else about it. Time inside an order is split by what the buyer's
reader and connection add to `TALLY` on this thread: "card ns" (the card's APDUs), "wire ns"
(requests to the seller) and "apdus".
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.meters import CpuMeter, Tally

WARMUP_ORDERS = 2
WARMUP_SECONDS = 1.0  # throughput: orders finishing in the first second are not counted

TALLY = Tally()  # per holder thread: what the order spent where, since the order began


class Buyer(Protocol):
    """One holder: `buy` places one order and says how it ended, ("completed", reason),
    ("declined", reason) or another status; its reader and connection add to TALLY."""

    def buy(self) -> tuple[str, str]: ...


class Shop(Protocol):
    """What the load is driven against, measured in the same run as the others."""

    name: str  # "nettx"
    holder_card: str  # what its throughput holders' cards are, for the table

    def processes(self) -> dict[str, int]:
        """Its processes by role (seller, issuer, delivery) -> PID, for the CPU meters."""
        ...

    def buyers(self, n: int) -> list[Buyer]:
        """n holders, each its own identity and account, so none declines for another."""
        ...


@dataclass(frozen=True, slots=True)
class Sample:
    """One order: when it ended, how long it took, and what its buyer tallied on the way
    (a new count, such as connections or fsyncs per order, is one more TALLY.add)."""

    end: int  # perf_counter_ns when buy returned
    total: int  # ns
    tally: Mapping[str, int]

    @property
    def card(self) -> int:
        return self.tally.get("card ns", 0)

    @property
    def wire(self) -> int:
        return self.tally.get("wire ns", 0)

    @property
    def apdus(self) -> int:
        return self.tally.get("apdus", 0)


def timed_buy(buyer: Buyer) -> tuple[str, str, Sample]:
    TALLY.take()
    t = time.perf_counter_ns()
    status, reason = buyer.buy()
    end = time.perf_counter_ns()
    return status, reason, Sample(end, end - t, TALLY.take())


@dataclass
class Row:
    """One line of the table: its orders, rates and CPU, runs and blocks together."""

    kind: str  # latency | throughput | profile
    card: str  # what the holder's card is
    holders: int
    shop: str = "nettx"
    rates: list[float] = field(default_factory=list)  # orders/s, one per run / block
    samples: list[Sample] = field(default_factory=list)
    declined: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # process -> % per run

    def outcome(self, status: str, reason: str) -> bool:
        if status == "completed":
            return True
        if status == "declined":
            self.declined += 1
        else:
            self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(f"{status}: {reason}")
        return False

    def error(self, exc: BaseException) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def add_cpu(self, cpu: dict[str, float]) -> None:
        for name, pct in cpu.items():
            self.cpu.setdefault(name, []).append(pct)


class Meter(Protocol):
    """CpuMeter, or anything started and stopped around the timed window (the profiler)."""

    def start(self) -> None: ...

    def stop(self) -> dict[str, float]: ...


def meter_for(shop: Shop, **more: int) -> CpuMeter:
    """The shop's processes and this one (the holders), and any more (the card process)."""
    return CpuMeter(shop.processes() | {"bench": os.getpid()} | more)


def buy_block(row: Row, buyer: Buyer, n: int, meter: Meter) -> None:
    """One holder, n orders back to back after the warm-ups; orders/s = n ÷ their time."""
    for _ in range(WARMUP_ORDERS):
        status, reason, _sample = timed_buy(buyer)
        row.outcome(status, reason)
    samples: list[Sample] = []
    meter.start()
    for _ in range(n):
        try:
            status, reason, sample = timed_buy(buyer)
        except Exception as exc:
            row.error(exc)
            continue
        if row.outcome(status, reason):
            samples.append(sample)
    row.add_cpu(meter.stop())
    if samples:
        row.rates.append(len(samples) / (sum(s.total for s in samples) / 1e9))
    row.samples += samples


def run_level(row: Row, buyers: Sequence[Buyer], seconds: float, meter: Meter) -> None:
    """All buyers buy back to back; orders that finish inside the timed window count."""
    go = threading.Event()
    window = [0, 0]  # ns: start, end of the timed window
    results: list[list[Sample]] = [[] for _ in buyers]
    lock = threading.Lock()

    def worker(i: int) -> None:
        buyer = buyers[i]
        go.wait()
        while time.perf_counter_ns() < window[1]:
            try:
                status, reason, sample = timed_buy(buyer)
            except Exception as exc:
                with lock:
                    row.error(exc)
                time.sleep(0.05)
                continue
            with lock:
                ok = row.outcome(status, reason)
            if ok:
                results[i].append(sample)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(len(buyers))]
    for t in threads:
        t.start()
    now = time.perf_counter_ns()
    window[0] = now + int(WARMUP_SECONDS * 1e9)
    window[1] = window[0] + int(seconds * 1e9)
    go.set()
    time.sleep(max(0.0, (window[0] - time.perf_counter_ns()) / 1e9))
    meter.start()
    time.sleep(max(0.0, (window[1] - time.perf_counter_ns()) / 1e9))
    row.add_cpu(meter.stop())
    for t in threads:
        t.join(120)
        if t.is_alive():
            raise RuntimeError("a holder thread did not finish its last order in 120 s")
    counted = [s for per in results for s in per if window[0] <= s.end < window[1]]
    row.rates.append(len(counted) / seconds)
    row.samples += counted
