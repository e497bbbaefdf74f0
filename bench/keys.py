"""The key path in-process: Horner, MSE (new and repeated peers), PSO, HKDF and MAC, and the
Horner evaluations a software key module runs per order.

    .venv/bin/python bench/keys.py [--seconds S] [--runs N] [--k K]

No I/O: every applet sits on a MemoryStore, so ENCIPHER's counter commit costs nothing here
(bench/apdu.py measures it on the EEPROM file). Rows (median of N runs of S seconds each,
interleaved):

  Horner                the row evaluated at one point (k field multiplications)
  MSE new peer          MSE to a peer never seen before (a fresh identifier every time)
  MSE repeated peers    MSE to three peers in turn, as a holder's card does in an order
  MSE + ENCIPHER 64 B   the holder's pattern: MSE to one of three peers, then a seal for it
  ENCIPHER / DECIPHER   1 KiB, peer set once
  INTERNAL AUTHENTICATE 16-byte challenge (confirm key + MAC)
  seal key, confirm MAC card_applet.keys alone (HKDF; HMAC)
  pair key HKDF         card_applet.blom.pair_key alone

and then a software key module (KeyModule.software, pool 32) serving orders from 8 holders in
turn, three operations per holder per order, concurrently as a server does: Horner
evaluations counted (by wrapping card_applet.blom.shared_element) per order, after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.meters import (  # noqa: E402
    back_to_back,
    interleaved,
    percentile_ms,
    results_console,
    results_table,
    spread,
)
from card_applet import blom, keys  # noqa: E402
from card_applet.apdu import EXTENDED_MAX_LE, CommandApdu  # noqa: E402
from card_applet.tlv import tlv  # noqa: E402
from card_applet.vocabulary import (  # noqa: E402
    MSE_SET_INTERNAL,
    MSE_TEMPLATE_AT,
    TAG_CRYPTOGRAM,
    TAG_KEY_REFERENCE,
    TAG_PLAIN,
    Ins,
    Pso,
)
from host.centre.authority import Master  # noqa: E402
from host.parties.keymodule import KeyModule  # noqa: E402
from host.parties.softcard import software_card  # noqa: E402

OWN = "seller:shop.example"
PEERS = ("holder:alice@example.org", "issuer:bank.example", "delivery:post.example")
OK = b"\x90\x00"


def mse(peer: str) -> bytes:
    return CommandApdu(0x00, Ins.MANAGE_SECURITY_ENVIRONMENT, MSE_SET_INTERNAL,
                       MSE_TEMPLATE_AT, tlv(TAG_KEY_REFERENCE, peer.encode())).to_bytes()


def pso(operation: Pso, tag: int, value: bytes) -> bytes:
    return CommandApdu(0x00, Ins.PERFORM_SECURITY_OPERATION, operation >> 8, operation & 0xFF,
                       tlv(tag, value), EXTENDED_MAX_LE).to_bytes()


def rows(k: int, identifiers: tuple[str, ...]) -> list[list[int]]:
    """Rows of one fresh master (the centre's reference evaluation: fine at bench sizes)."""
    master = Master.generate(k).matrix()
    return [blom.row_for(master, blom.x_of(i)) for i in identifiers]


def random_row(k: int) -> list[int]:
    return [secrets.randbelow(blom.P) for _ in range(k)]


class Cell:
    def __init__(self, name: str, operation: Callable[[None], object], seconds: float,
                 setup: Callable[[], object] = lambda: None) -> None:
        self.name, self.operation, self.seconds, self.setup = name, operation, seconds, setup
        self.rates: list[float] = []
        self.samples: list[int] = []

    def run(self, seconds: float | None = None) -> None:
        self.setup()
        r = back_to_back(self.operation, None, self.seconds if seconds is None else seconds)
        if seconds is None:  # a warm-up is not a run
            self.rates.append(r.rate)
            self.samples.extend(r.latencies)


def build(k: int, seconds: float) -> list[Cell]:
    own_row, peer_row = rows(k, (OWN, PEERS[0]))
    session = software_card(OWN, own_row)
    applet = session.reader.applet  # type: ignore[attr-defined]
    process = applet.process

    def ok(raw: bytes) -> bytes:
        response = process(raw)
        if response[-2:] != OK:
            raise RuntimeError(f"{raw[:4].hex()} answered {response[-2:].hex()}")
        return response

    row = blom.row_from_bytes(applet.state.row)
    x = blom.x_of(PEERS[0])
    fresh = iter(range(10**9))
    rotation = [mse(p) for p in PEERS]
    turn = iter(range(10**9))
    small = pso(Pso.ENCIPHER, TAG_PLAIN, bytes(64))
    ok(mse(PEERS[0]))
    encipher = pso(Pso.ENCIPHER, TAG_PLAIN, bytes(1024))
    peer_card = software_card(PEERS[0], peer_row)
    peer_card.set_peer(OWN)
    box_from_peer = peer_card.encrypt(bytes(1024))
    decipher = pso(Pso.DECIPHER, TAG_CRYPTOGRAM, box_from_peer)
    challenge = CommandApdu(0x00, Ins.INTERNAL_AUTHENTICATE, 0, 0, bytes(16), 256).to_bytes()
    pair = bytes(32)

    def mse_then_seal(_: None) -> None:
        ok(rotation[next(turn) % 3])
        ok(small)

    def peer_set_then(raw: bytes) -> Callable[[None], object]:
        def run(_: None) -> object:
            return ok(raw)
        return run

    cells = [
        Cell(f"Horner (k = {k})", lambda _: blom.shared_element(row, x), seconds),
        Cell("MSE, new peer each time", lambda _: ok(mse(f"holder:{next(fresh)}@example.org")),
             seconds),
        Cell("MSE, 3 peers in turn", lambda _: ok(rotation[next(turn) % 3]), seconds),
        Cell("MSE + ENCIPHER 64 B, 3 peers in turn", mse_then_seal, seconds),
    ]
    fixed = [
        Cell("ENCIPHER 1 KiB (RAM store)", peer_set_then(encipher), seconds),
        Cell("DECIPHER 1 KiB", peer_set_then(decipher), seconds),
        Cell("INTERNAL AUTHENTICATE 16 B", peer_set_then(challenge), seconds),
        Cell("keys.seal_key (HKDF)", lambda _: keys.seal_key(pair, b"a", b"b", b"ctx"), seconds),
        Cell("keys.confirm_mac (HMAC)", lambda _: keys.confirm_mac(pair, bytes(16)), seconds),
        Cell("blom.pair_key (HKDF)", lambda _: blom.pair_key(12345, OWN, PEERS[0]), seconds),
    ]

    # the PSO cells need PEERS[0] as the current peer: set before each of their runs
    for cell in fixed:
        cell.setup = lambda: ok(mse(PEERS[0]))
    return cells + fixed


def horners_per_order(k: int, orders: int, holders: int = 8) -> tuple[float, int]:
    """Horner evaluations per order at a software module (pool 32) after a warm-up: holders
    in turn, each order three operations for its holder and one each for the card manager
    and the delivery company, 8 orders in flight at once."""
    module = KeyModule.software(OWN, random_row(k))
    count = [0]
    real = blom.shared_element

    def counted(row: list[int], x: int) -> int:
        count[0] += 1
        return real(row, x)

    async def order(n: int) -> None:
        holder = f"holder:{n % holders}@example.org"
        for peer in (holder, "issuer:bank.example", holder, "delivery:post.example", holder):
            await module.seal(peer, b"part", b"aad", b"ctx")
            await asyncio.sleep(0)

    async def batch(first: int, count_orders: int) -> None:
        for start in range(first, first + count_orders, 8):
            await asyncio.gather(*(order(n) for n in range(start, start + 8)))

    blom.shared_element = counted  # type: ignore[assignment]
    try:
        asyncio.run(batch(0, 16))  # warm-up: every holder once
        warm = count[0]
        count[0] = 0
        asyncio.run(batch(16, orders))
    finally:
        blom.shared_element = real  # type: ignore[assignment]
    return count[0] / orders, warm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one run (1)")
    parser.add_argument("--runs", type=int, default=5, help="runs per cell (5)")
    parser.add_argument("--k", type=int, default=512, help="row length (512)")
    parser.add_argument("--orders", type=int, default=400, help="orders counted (400)")
    args = parser.parse_args(argv)
    cells = build(args.k, args.seconds)
    for cell in cells:
        cell.run(min(0.2, args.seconds))  # warm-up
    interleaved(args.runs, cells, lambda c: c.run())
    table = results_table(f"the key path in-process (k = {args.k})",
                          ("operation", "ops/s", "runs min–max", "median us", "p99 us"),
                          left=("operation",),
                          caption=f"median of {args.runs} runs × {args.seconds:g} s, "
                                  "interleaved; latency over every operation of every run")
    for cell in cells:
        table.add_row(cell.name, *spread(cell.rates),
                      f"{percentile_ms(cell.samples, 0.5) * 1000:.1f}",
                      f"{percentile_ms(cell.samples, 0.99) * 1000:.1f}")
    per_order, warm = horners_per_order(args.k, args.orders)
    out = results_console(100)
    out.print(table)
    out.print(f"software key module (pool 32), 8 holders in turn, 8 orders in flight: "
              f"{per_order:.2f} Horner evaluations per order over {args.orders} orders "
              f"({warm} in the 16 warm-up orders)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
