"""Where a card process spends its time per APDU (the investigation behind bench/README.md).

    .venv/bin/python bench/profile_card.py [--seconds S] [--cprofile] [--spin-us N ...]

Drives GET DATA 00 CA 00 C2 through the embedded vpcd reader (and, with --pcsc, through
a running pcscd's "Virtual PCD 00 00": start one with vpcd_config/pcscd-vpcd first) against
card processes that run card_applet.vpcd's very socket loop with a timing wrapper around
CardSide.handle:

  nettx           the applet over its FileStore (a personalised card, k = 512)
  echo            90 00 to everything (bench/echo_card.py's card)
  echo+spin N us  90 00 after busy-waiting N microseconds: how much a little card-side CPU
                  costs the round trip (it is more than N: see README)

For each it prints APDUs/s, round trip at the terminal, and inside the card process: the
time in CardSide.handle and the time between a reply's sendall and the next frame's recv
(the card waiting on the reader). --cprofile also writes the card process's profile
(pstats, top 25 by cumulative time) for the nettx card.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.meters import back_to_back, percentile  # noqa: E402
from card_applet import vpcd  # noqa: E402
from card_applet.applet import Applet  # noqa: E402
from card_applet.state import FileStore  # noqa: E402
from card_applet.vpcd import CardSide, VpcdCard  # noqa: E402

GET_DATA = bytes.fromhex("00CA00C200")
SELECT = bytes.fromhex("00A404000AF0455030373931393031") + b"\x00"


# -- the card side (run as a child: `profile_card.py card ...`) ------------------------------


class Spin:
    def __init__(self, us: float) -> None:
        self.ns = int(us * 1000)

    def process(self, command: bytes) -> bytes:
        end = time.perf_counter_ns() + self.ns
        while time.perf_counter_ns() < end:
            pass
        return b"\x90\x00"

    def power_on(self) -> None: ...
    def power_off(self) -> None: ...
    def reset(self) -> None: ...


class TimedSide(CardSide):
    handle_ns: list[int]

    def handle(self, frame: bytes) -> bytes | None:
        t = time.perf_counter_ns()
        reply = super().handle(frame)
        if len(frame) > 1:
            self.handle_ns.append(time.perf_counter_ns() - t)
        return reply


def card_main(args: argparse.Namespace) -> int:
    card = Applet(FileStore(Path(args.state))) if args.state else Spin(args.spin_us)
    side = TimedSide(card)
    side.handle_ns = []
    idle: list[int] = []
    sent_at = [0]
    real_recv = vpcd.socket.socket.recv
    real_sendall = vpcd.socket.socket.sendall

    # time between our reply and the next frame: the reader's share of the round trip
    def recv(sock, n, *a):
        data = real_recv(sock, n, *a)
        if sent_at[0]:
            idle.append(time.perf_counter_ns() - sent_at[0])
            sent_at[0] = 0
        return data

    def sendall(sock, data, *a):
        real_sendall(sock, data, *a)
        sent_at[0] = time.perf_counter_ns()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    profiler = cProfile.Profile() if args.cprofile_out else None
    with contextlib.ExitStack() as patches:
        patches.enter_context(_patched(vpcd.socket.socket, "recv", recv))
        patches.enter_context(_patched(vpcd.socket.socket, "sendall", sendall))
        if profiler:
            profiler.enable()
        VpcdCard(side, "127.0.0.1", args.port, stop=stop).run()
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.cprofile_out)
    Path(args.stats_out).write_text(json.dumps({"handle": side.handle_ns, "idle": idle}))
    return 0


@contextlib.contextmanager
def _patched(cls, name, value):
    # socket.socket is a Python class (a subclass of _socket.socket): patchable
    old = cls.__dict__.get(name)
    setattr(cls, name, value)
    try:
        yield
    finally:
        if old is None:
            delattr(cls, name)
        else:
            setattr(cls, name, old)


# -- the terminal side ----------------------------------------------------------------------


def ms(ns: list[int], q: float = 0.5) -> str:
    """Nearest-rank percentile of ns values, in µs."""
    return "-" if not ns else f"{percentile(ns, q) / 1000:7.1f}"


def personalised_card(home: Path) -> Path:
    from card_applet import blom
    from host.centre.authority import Authority
    from host.centre.personalisation import personalise
    from terminal.inprocess import InProcessReader
    from terminal.session import CardSession

    authority = Authority(home / "centre")
    authority.init(k=512)
    holder = "holder:profile@example.org"
    (row,) = authority.rows_for([blom.x_of(holder)])
    path = home / "card.json"
    authority.manufacture_card(path)
    personalise(CardSession(InProcessReader(Applet(FileStore(path)))),
                authority.transport_master, holder, row, "1234", "12345678")
    return path


def one(label: str, card_args: list[str], tmp: Path, args: argparse.Namespace,
        pcsc_port: int | None) -> None:
    from terminal.embedded import EmbeddedReader

    stats = tmp / f"{label}.json".replace(" ", "_").replace("+", "_")
    reader = None
    if pcsc_port is None:
        reader = EmbeddedReader("127.0.0.1", 0)
        port = reader.port
    else:
        port = pcsc_port
    proc = subprocess.Popen([sys.executable, __file__, "card", "--port", str(port),
                             "--stats-out", str(stats), *card_args])
    try:
        if reader is None:
            from terminal.pcsc import PcscReader

            deadline = time.monotonic() + 15
            while True:
                try:
                    reader = PcscReader("Virtual PCD 00 00")
                    reader.power_on()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        else:
            reader.wait_for_card(15)
            reader.power_on()
        reader.transmit(SELECT)
        back_to_back(reader.transmit, GET_DATA, 0.3)
        run = back_to_back(reader.transmit, GET_DATA, args.seconds)
        rate, lat = run.rate, run.latencies
    finally:
        if reader is not None:
            reader.close()
        proc.terminate()
        proc.wait(10)
    data = json.loads(stats.read_text())
    handle, idle = data["handle"], data["idle"]
    print(f"{label:18s} {rate:9,.0f}/s  rtt {ms(lat)} us  p99 {ms(lat, .99)} us | card: "
          f"handle {ms(handle)} us  waiting for reader {ms(idle)} us  "
          f"(n={len(handle)})", flush=True)
    if pcsc_port is not None:  # let pcscd notice the card left before the next one
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    card = sub.add_parser("card")
    card.add_argument("--port", type=int, required=True)
    card.add_argument("--state")
    card.add_argument("--spin-us", type=float, default=0.0)
    card.add_argument("--stats-out", required=True)
    card.add_argument("--cprofile-out")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--spin-us", type=float, nargs="*", default=[5, 15, 30])
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--pcsc", type=int, metavar="PORT",
                        help="also drive through a running pcscd whose vpcd listens on PORT")
    args = parser.parse_args(argv)
    if args.cmd == "card":
        return card_main(args)
    print(f"CPUs {os.cpu_count()}, load {Path('/proc/loadavg').read_text().split()[:3]}")
    with tempfile.TemporaryDirectory(prefix="nettx-profile-") as name:
        tmp = Path(name)
        state = personalised_card(tmp)
        ports = [None] + ([args.pcsc] if args.pcsc else [])
        for port in ports:
            print("-- embedded vpcd --" if port is None else f"-- PC/SC (vpcd :{port}) --")
            one("nettx", ["--state", str(state)], tmp, args, port)
            one("echo", [], tmp, args, port)
            for us in args.spin_us:
                one(f"echo+spin {us:g}us", ["--spin-us", str(us)], tmp, args, port)
            one("nettx (again)", ["--state", str(state)], tmp, args, port)
        if args.cprofile:
            out = tmp / "card.prof"
            one("nettx cProfile", ["--state", str(state), "--cprofile-out", str(out)], tmp,
                args, None)
            pstats.Stats(str(out)).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
