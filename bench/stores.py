"""The three parties' stores in-process: the CPU an order costs each of them in its store, on
SQLite, as the parties use them.

    .venv/bin/python bench/stores.py [--orders N] [--tasks C] [--runs R]

No network, no keys: C tasks on one event loop run N orders through each store, as the party's
handlers do (the seller: the order recorded and claimed, three moves, the reads its driver
makes; the card manager: the authorisation and the record of its answer; the delivery
company: the shipment and the record of its answer), with fresh databases on the file system
of the temporary directory (WAL, synchronous=FULL: every durable commit fsyncs). Printed per
store, median of R runs: CPU µs per order of the whole process and of its threads (the event
loop, which runs the decisions, and the committer thread, which runs each batch's COMMIT),
wall µs per order, and decisions per batch. Compare two trees by running this file from each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.meters import thread_ns  # noqa: E402
from host.storage.ledger import (  # noqa: E402
    Account,
    AuthorisationRequest,
    Decision,
    Facts,
    Ledger,
)
from host.storage.order_book import OrderBook, OrderStatus  # noqa: E402
from host.storage.shipments import Shipments  # noqa: E402
from host.storage.sqlite import Database  # noqa: E402

CARD, HOLDER, SELLER = "4000123412341234", "holder:alice@example.org", "seller:shop.example"
REQUEST = AuthorisationRequest(
    order_id=bytes(16), request_digest=bytes(32), seller=SELLER, holder=HOLDER,
    digest=bytes(32), atc=0, card_number=CARD, amount=49, expiry="12/29", name="Alice",
    phone=None, fields=frozenset({"card_number", "amount"}))
# the sizes of the seller's rows in a k = 512 run of bench/orders.py
ENVELOPE, APPROVAL, RECEIPT, OUTCOME, ANSWER = 1364, 32, 289, 532, 549


def approve(request: AuthorisationRequest, _facts: Facts) -> Decision:
    return Decision("approved", "approved", request.amount or 0, request.digest,
                    card_number=CARD)


async def seller_order(book: OrderBook, _n: int) -> None:
    order_id, S = secrets.token_bytes(16), OrderStatus
    await book.receive(order_id, secrets.token_bytes(ENVELOPE), HOLDER, 49, bytes(32),
                       ["amount", "items"], claim=True)
    book.get(order_id)  # the driver reads the record
    await book.move(order_id, S.AUTHORISING)
    book.status(order_id)  # and the status after each step
    await book.move(order_id, S.APPROVED, approval=(bytes(APPROVAL), bytes(RECEIPT)))
    book.status(order_id)
    await book.move(order_id, S.COMPLETED, outcome=bytes(OUTCOME), answer=bytes(ANSWER))
    book.get(order_id)  # the answer recorded with the outcome


async def issuer_order(ledger: Ledger, n: int) -> None:
    request = replace(REQUEST, order_id=secrets.token_bytes(16), atc=n)
    decision, _seen = await ledger.authorise(request, approve)
    assert decision.approved
    await ledger.record_answer(request.order_id, bytes(700))


async def delivery_order(shipments: Shipments, _n: int) -> None:
    order_id = secrets.token_bytes(16)
    await shipments.ship(order_id, bytes(32), SELLER, "Alice", "1 Main Street",
                         "TRK-" + order_id.hex(), ["recipient", "destination"])
    await shipments.record_answer(order_id, bytes(600))


@dataclass(frozen=True)
class Result:
    cpu: float  # µs per order: the process
    loop: float  # the event loop's thread
    committer: float  # the committer threads
    wall: float
    per_batch: float  # decisions per batch


def thread_cpu() -> dict[int, float]:
    """CPU seconds on a CPU per thread of this process."""
    return {tid: run / 1e9 for tid, (run, _wait) in thread_ns(os.getpid()).items()}


def run(make: Callable[[Path], object], order: Callable[[object, int], Awaitable[None]],
        orders: int, tasks: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="nettx-stores-") as tmp:
        store = make(Path(tmp) / "store.sqlite")
        db = store.db  # type: ignore[attr-defined]
        assert isinstance(db, Database)
        counter = iter(range(1, 10**9))

        async def drive(count: int) -> None:
            async def worker(k: int) -> None:
                for _ in range(k):
                    await order(store, next(counter))
            await asyncio.gather(*(worker(count // tasks) for _ in range(tasks)))

        try:
            asyncio.run(drive(max(tasks * 10, orders // 10)))  # warm-up
            batches, decisions = db.committer.batches, db.committer.decisions
            loop_id = threading.get_native_id()
            before, cpu, wall = thread_cpu(), time.process_time(), time.perf_counter()
            asyncio.run(drive(orders))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            after = thread_cpu()
            batches, decisions = (db.committer.batches - batches,
                                  db.committer.decisions - decisions)
        finally:
            store.close()  # type: ignore[attr-defined]
    done = orders // tasks * tasks
    loop = after[loop_id] - before.get(loop_id, 0.0)
    others = sum(t - before.get(tid, 0.0) for tid, t in after.items() if tid != loop_id)
    return Result(cpu / done * 1e6, loop / done * 1e6, others / done * 1e6, wall / done * 1e6,
                  decisions / max(batches, 1))


def make_ledger(path: Path) -> Ledger:
    ledger = Ledger(path)
    ledger.add_account(Account(CARD, HOLDER, "Alice", "", "12/29", 10**15))
    return ledger


STORES: dict[str, tuple[Callable[[Path], object], Callable[[object, int], Awaitable[None]]]] = {
    "seller (order book)": (OrderBook, seller_order),  # type: ignore[dict-item]
    "card manager (ledger)": (make_ledger, issuer_order),  # type: ignore[dict-item]
    "delivery (shipments)": (Shipments, delivery_order),  # type: ignore[dict-item]
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per run")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent tasks (holders)")
    parser.add_argument("--runs", type=int, default=3, help="runs per store, interleaved")
    args = parser.parse_args()
    results: dict[str, list[Result]] = {name: [] for name in STORES}
    for _ in range(args.runs):
        for name, (make, order) in STORES.items():
            results[name].append(run(make, order, args.orders, args.tasks))
    table = Table(title=f"the stores' cost per order: {args.orders} orders, {args.tasks} "
                        f"tasks, median of {args.runs} runs")
    for column in ("store", "CPU µs", "loop µs", "committer µs", "wall µs",
                   "decisions / batch"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for name, rows in results.items():
        def median(field: str, rows: list[Result] = rows) -> float:
            return statistics.median(getattr(r, field) for r in rows)
        table.add_row(name, f"{median('cpu'):.0f}", f"{median('loop'):.0f}",
                      f"{median('committer'):.0f}", f"{median('wall'):.0f}",
                      f"{median('per_batch'):.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
