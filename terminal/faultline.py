"""A serial line with faults: two pty pairs and a proxy between their masters that drops,
corrupts or delays bytes by a seeded schedule, so a test can replay the same noise.

    with FaultLine(Faults(corrupt=0.01), seed=7) as line:
        card opens line.card_path, reader opens line.reader_path

Each direction draws from its own random.Random(seed, direction), one draw per byte, so
the schedule depends only on the seed and the bytes' order, not on timing. The slave ends
are held open and raw from the start, so nothing is echoed or cooked before the two ends
open them, and a side that closes and reopens its end finds the line still there.
Stopped by `close` (the thread is joined, every fd closed).
"""

from __future__ import annotations

import os
import random
import selectors
import threading
import time
import tty
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Faults:
    corrupt: float = 0.0  # probability a byte is XORed with a random non-zero value
    drop: float = 0.0  # probability a byte is lost
    delay: float = 0.0  # probability the rest of the burst waits `delay_s` first
    delay_s: float = 0.1


@dataclass
class Counts:
    bytes: int = 0
    corrupted: int = 0
    dropped: int = 0
    delayed: int = 0


@dataclass
class _Direction:
    src: int
    dst: int
    rng: random.Random
    counts: Counts = field(default_factory=Counts)


class FaultLine:
    def __init__(self, faults: Faults = Faults(), seed: int = 0) -> None:
        self.faults = faults
        self._fds: list[int] = []
        card_master, card_slave = self._pair()
        reader_master, reader_slave = self._pair()
        self.card_path, self.reader_path = os.ttyname(card_slave), os.ttyname(reader_slave)
        self.to_card = _Direction(reader_master, card_master, random.Random(f"{seed}/to-card"))
        self.to_reader = _Direction(card_master, reader_master,
                                    random.Random(f"{seed}/to-reader"))
        self.enabled = threading.Event()  # faults apply only while set
        self.enabled.set()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="faultline", daemon=True)
        self._thread.start()

    def _pair(self) -> tuple[int, int]:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._fds += [master, slave]
        return master, slave

    def _apply(self, way: _Direction, data: bytes) -> None:
        out = bytearray()
        faults, rng = self.faults, way.rng
        for byte in data:
            way.counts.bytes += 1
            draw_drop, draw_corrupt, draw_delay = rng.random(), rng.random(), rng.random()
            flip = rng.randrange(1, 256)
            if not self.enabled.is_set():
                out.append(byte)
                continue
            if draw_delay < faults.delay:
                way.counts.delayed += 1
                os.write(way.dst, bytes(out))
                out.clear()
                time.sleep(faults.delay_s)
            if draw_drop < faults.drop:
                way.counts.dropped += 1
                continue
            if draw_corrupt < faults.corrupt:
                way.counts.corrupted += 1
                byte ^= flip
            out.append(byte)
        if out:
            os.write(way.dst, bytes(out))

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.to_card.src, selectors.EVENT_READ, self.to_card)
            sel.register(self.to_reader.src, selectors.EVENT_READ, self.to_reader)
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            while not self._stop.is_set():
                for key, _ in sel.select():
                    way = key.data
                    if way is None:
                        return
                    try:
                        data = os.read(way.src, 4096)
                    except OSError:  # EIO: no one has the slave open at the moment
                        time.sleep(0.01)
                        continue
                    self._apply(way, data)

    @property
    def counts(self) -> dict[str, Counts]:
        return {"to card": self.to_card.counts, "to reader": self.to_reader.counts}

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        for fd in (*self._fds, self._wake_r, self._wake_w):
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> FaultLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
