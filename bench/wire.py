"""Micro-benchmark of the wire path in one process: per message type, µs to build its frame
(`to_frame`), to parse one (`messages.parse`), and a session's `seal` and `open` around it;
plus the frame decoder and the session MAC alone. No sockets, no other process: what one
frame costs a party's CPU before asyncio and the kernel see it.

    .venv/bin/python bench/wire.py              # ~20 s
    .venv/bin/python bench/wire.py --rounds 3   # quicker

Each figure is the best of `--rounds` rounds of time.process_time over `--n` iterations
(the best, since other processes on the machine only ever add to it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rich.console import Console
from rich.table import Table

from bench.meters import cpu_us_samples
from host.protocol import messages
from host.protocol.envelope import Envelope
from host.protocol.messages import (
    Authorisation,
    Authorise,
    Confirm,
    Confirmed,
    Deliver,
    Delivery,
    Form,
    FormRequest,
    Message,
    OrderOutcome,
    OrderSubmission,
    OutcomeStatus,
)
from host.protocol.order import Party
from host.protocol.session import Channel, Direction, SessionKeys, frame_mac
from host.protocol.wire import LENGTH, FrameDecoder


def samples() -> list[Message]:
    """One of each message an order sends, at the sizes an order at k = 512 has."""
    header, box = bytes(range(200)) * 1, os.urandom(420)
    envelope = Envelope(header, {p: os.urandom(400) for p in Party})
    return [
        FormRequest("holder:alice", os.urandom(16)),
        Form(os.urandom(700), os.urandom(48)),
        Confirm("issuer", "holder:alice", os.urandom(16)),
        Confirmed(os.urandom(16)),
        OrderSubmission(envelope),
        Authorise(header, box, os.urandom(16)),
        Authorisation("approved", "", 2790, os.urandom(32), os.urandom(16), os.urandom(120)),
        Deliver(header, box, os.urandom(16), os.urandom(16)),
        Delivery("TRK-0001", os.urandom(16), os.urandom(120)),
        OrderOutcome(os.urandom(16), OutcomeStatus.COMPLETED, "", 2790, "TRK-0001",
                     os.urandom(120), os.urandom(120)),
    ]


def per_call(fn: Callable[[], object], n: int, rounds: int) -> float:
    return min(cpu_us_samples(fn, n, rounds))  # the best round: the least disturbed


def row(message: Message, keys: SessionKeys, n: int, rounds: int) -> list[str]:
    data = message.to_frame()
    body = data[LENGTH.size:]
    sender = Channel(keys, initiator=True)
    receiver = Channel(SessionKeys(keys.receive, keys.send), initiator=False)
    sealed = iter([sender.seal(data)[LENGTH.size:] for _ in range(n * rounds)])
    return [message.TYPE.value, str(len(data)),
            f"{per_call(message.to_frame, n, rounds):.1f}",
            f"{per_call(lambda: messages.parse(body), n, rounds):.1f}",
            f"{per_call(lambda: sender.seal(data), n, rounds):.1f}",
            f"{per_call(lambda: receiver.open(next(sealed)), n, rounds):.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="iterations per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n, rounds = args.n, args.rounds
    keys = SessionKeys(os.urandom(32), os.urandom(32))

    table = Table(title="the wire path, µs per call (best of the rounds, process CPU time)")
    for column in ("message", "bytes", "to_frame", "parse", "seal", "open"):
        table.add_column(column, justify="left" if column == "message" else "right")
    for message in samples():
        table.add_row(*row(message, keys, n, rounds))
    console = Console()
    console.print(table)

    data = samples()[5].to_frame()
    decoder = FrameDecoder()
    console.print(f"FrameDecoder.feed, one whole frame of {len(data)} bytes: "
                  f"{per_call(lambda: decoder.feed(data), n, rounds):.2f} µs")
    key, body = os.urandom(32), data[LENGTH.size:]
    console.print(f"frame_mac over {len(body)} bytes (the reference function): "
                  f"{per_call(lambda: frame_mac(key, Direction(1), 7, body), n, rounds):.2f} µs")


if __name__ == "__main__":
    main()
