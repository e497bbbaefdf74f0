"""The in-process APDU: CPU per command for each command an order uses, and a software key
module serving a seller's share of orders.

    .venv/bin/python bench/order_apdus.py [--k 512] [--runs 5] [--iterations 4000]

Each row is one CardSession verb on a software card (host.parties.softcard: the nettx applet
behind terminal.inprocess, a MemoryStore, so ENCIPHER's counter reservation costs nothing),
the whole path an order's APDU takes in a party: CardSession -> ApduProtocol (trace checks,
APDU encoding, response decoding) -> InProcessReader -> Applet.process (dispatch, TLV,
crypto). CPU time (time.process_time) over --iterations calls, the median of --runs runs.

The last rows are a software key module (KeyModule.software, pool 32) doing what a seller
does per order, 8 holders' orders at once: MAC a form for the holder, open the holder's MAC,
seal for the card manager and the delivery company, answer a confirmation; its CPU per order
and the MSEs it sent per order (counted on the pool's sessions), after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.meters import cpu_us_samples, results_console, results_table  # noqa: E402
from card_applet import blom  # noqa: E402
from host.centre.authority import Master  # noqa: E402
from host.parties.keymodule import KeyModule  # noqa: E402
from host.parties.softcard import software_card  # noqa: E402
from terminal.errors import ApduError  # noqa: E402

SELLER, ISSUER, DELIVERY = "seller:shop.example", "issuer:bank.example", "delivery:post.example"
HOLDERS = tuple(f"holder:{i}@example.org" for i in range(8))
AAD, CONTEXT, PLAIN = bytes(200), bytes(20), bytes(300)


def cpu_us(operation: Callable[[], object], iterations: int, runs: int) -> float:
    for _ in range(iterations // 10):  # warm-up
        operation()
    return statistics.median(cpu_us_samples(operation, iterations, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=4000)
    args = parser.parse_args()

    master = Master.generate(args.k).matrix()
    rows = {i: blom.row_for(master, blom.x_of(i)) for i in (SELLER, ISSUER, DELIVERY, *HOLDERS)}
    card, peer = software_card(SELLER, rows[SELLER]), software_card(ISSUER, rows[ISSUER])
    card.set_peer(ISSUER)
    peer.set_peer(SELLER)
    box, mac = peer.encrypt(PLAIN, AAD, CONTEXT), peer.encrypt(b"", AAD, CONTEXT)
    challenge = card.get_challenge()
    nonces = bytes(32), bytes(range(32))

    def get_challenge_external_authenticate() -> None:
        card.get_challenge()
        with contextlib.suppress(ApduError):  # a wrong answer: the card checks it all
            card.external_authenticate(bytes(16))

    table = results_table(f"the in-process APDU, k = {args.k} (CPU, median of {args.runs} runs)",
                          ["command", "µs"], left=["command"])
    for name, operation in (
            ("MSE (a peer in the RAM cache)", lambda: card.set_peer(ISSUER)),
            ("PSO ENCIPHER 300 B", lambda: card.encrypt(PLAIN, AAD, CONTEXT)),
            ("PSO ENCIPHER, a MAC (nothing)", lambda: card.encrypt(b"", AAD, CONTEXT)),
            ("PSO DECIPHER 300 B", lambda: card.decrypt(box, AAD, CONTEXT)),
            ("PSO DECIPHER, a MAC", lambda: card.decrypt(mac, AAD, CONTEXT)),
            ("GET CHALLENGE", card.get_challenge),
            ("INTERNAL AUTHENTICATE", lambda: card.internal_authenticate(challenge)),
            ("GET CHALLENGE + EXTERNAL AUTHENTICATE", get_challenge_external_authenticate),
            ("GENERAL AUTHENTICATE", lambda: card.general_authenticate(True, *nonces))):
        table.add_row(name, f"{cpu_us(operation, args.iterations, args.runs):.1f}")

    module = KeyModule.software(SELLER, rows[SELLER])
    sent: list[str] = []
    for session in module.sessions:
        def counted(peer_id: str, real: Callable[[str], None] = session.set_peer) -> None:
            sent.append(peer_id)
            real(peer_id)
        session.set_peer = counted  # type: ignore[method-assign]
    holder_macs = {}
    for holder in HOLDERS:
        holder_card = software_card(holder, rows[holder])
        holder_card.set_peer(SELLER)
        holder_macs[holder] = holder_card.encrypt(b"", AAD, CONTEXT)

    async def order(holder: str) -> None:
        await module.mac(holder, AAD, CONTEXT)
        await module.check_mac(holder, AAD, holder_macs[holder], CONTEXT, "form")
        await module.seal(ISSUER, PLAIN, AAD, CONTEXT)
        await module.seal(DELIVERY, PLAIN, AAD, CONTEXT)
        await module.answer(holder, challenge)

    async def orders(rounds: int) -> None:
        for _ in range(rounds):
            await asyncio.gather(*(order(holder) for holder in HOLDERS))

    rounds = max(1, args.iterations // 40)
    asyncio.run(orders(3))
    samples, mses = [], []
    for _ in range(args.runs):
        sent.clear()
        start = time.process_time()
        asyncio.run(orders(rounds))
        samples.append((time.process_time() - start) / (rounds * len(HOLDERS)) * 1e3)
        mses.append(len(sent) / (rounds * len(HOLDERS)))
    table.add_section()
    table.add_row("key module, a seller's 5 operations per order (ms)",
                  f"{statistics.median(samples):.3f}")
    table.add_row("  its MSEs per order", f"{statistics.median(mses):.2f}")
    results_console(60).print(table)


if __name__ == "__main__":
    main()
