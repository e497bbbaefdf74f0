"""The attacker of issue 10 item 1: an unprivileged local process that watches
/proc/net/tcp and connects to every loopback port that starts listening, hoping to be taken
for the card by an embedded reader, and then plays a card (its own, not the holder's) to
collect what the terminal sends: the PIN in VERIFY, the order's parts in PSO ENCIPHER.

    python -m tests.e2e.portsnatch --fake-state FILE --report OUT.json --scope-pid PID
                                   [--duration S]

Bounded and polite: only 127.0.0.1, only ports that were not listening when it started and
that belong to process PID or its descendants (the test's own processes: other services on
the machine are left alone), at most MAX_CONNECTIONS, for at most --duration seconds. It
never sends first: a listener that is not a vpcd reader gets nothing from it. It prints
"ready" once it has its baseline, and writes its report when done (or on SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from card_applet.applet import Applet
from card_applet.state import MemoryStore, read_state
from card_applet.vpcd import CardSide, FrameBuffer, encode_frame

MAX_CONNECTIONS = 32
LISTEN = "0A"
LOOPBACK_V4 = {"0100007F", "00000000"}  # 127.0.0.1 and 0.0.0.0 (reachable on loopback)


def listening_loopback_ports() -> dict[int, str]:
    """Port -> socket inode of every listener reachable on 127.0.0.1."""
    ports = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if fields[3] == LISTEN and address in LOOPBACK_V4:
            ports[int(port, 16)] = fields[9]
    return ports


def descendants(root: int) -> set[int]:
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(text.rpartition(")")[2].split()[1])
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def owned_by_tree(inode: str, root: int) -> bool:
    target = f"socket:[{inode}]"
    for pid in descendants(root):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if str(fd.readlink()) == target:
                    return True
            except OSError:
                continue
    return False


class Snatcher:
    def __init__(self, fake: CardSide, hold: float) -> None:
        self.fake, self.hold = fake, hold
        self.lock = threading.Lock()
        self.connected: list[int] = []
        self.frames: dict[int, list[str]] = {}  # port -> frames received (hex)

    def take(self, port: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
        except OSError:
            return
        with self.lock:
            self.connected.append(port)
        threading.Thread(target=self._play_card, args=(port, sock), daemon=True).start()

    def _play_card(self, port: int, sock: socket.socket) -> None:
        buffer, deadline = FrameBuffer(), time.monotonic() + self.hold
        with sock:
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for frame in buffer.feed(data):
                    with self.lock:
                        self.frames.setdefault(port, []).append(frame.hex())
                    reply = self.fake.handle(frame)
                    if reply is not None:
                        sock.sendall(encode_frame(reply))

    def report(self) -> dict[str, object]:
        with self.lock:
            return {"connected": list(self.connected),
                    "frames": {str(p): list(f) for p, f in self.frames.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.portsnatch")
    parser.add_argument("--fake-state", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--scope-pid", type=int, required=True)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args(argv)
    snatcher = Snatcher(CardSide(Applet(MemoryStore(read_state(args.fake_state)))),
                        hold=args.duration)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    baseline = set(listening_loopback_ports())
    tried: set[int] = set()
    print("ready", flush=True)
    deadline = time.monotonic() + args.duration
    while not stop.is_set() and time.monotonic() < deadline and len(tried) < MAX_CONNECTIONS:
        for port, inode in sorted(listening_loopback_ports().items()):
            if port in baseline or port in tried:
                continue
            tried.add(port)
            if owned_by_tree(inode, args.scope_pid):
                snatcher.take(port)
        stop.wait(0.002)
    args.report.write_text(json.dumps(snatcher.report()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# -- for the tests ------------------------------------------------------------------------------

HOOK_DIR = Path(__file__).resolve().parent / "slow_card_start"


def slow_card_env() -> dict[str, str]:
    """The environment for a command whose card process should start late (the hook in
    slow_card_start/sitecustomize.py)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "COLUMNS": "200",
            "PYTHONPATH": f"{HOOK_DIR}{os.pathsep}{path}" if path else str(HOOK_DIR)}


def make_fake_card(work: Path, holder: str, pin: str = "4321") -> Path:
    """The attacker's own card: personalised for `holder` by a centre of its own, so it
    answers SELECT like the real one but holds no genuine row."""
    from host.centre.authority import Authority
    from host.centre.personalisation import issue_onto_card
    from terminal.readers import open_reader
    from terminal.session import CardSession

    centre = Authority(work / "rogue-centre")
    centre.init(k=8)
    path = work / "fake.card.json"
    centre.manufacture_card(path)
    reader = open_reader(f"inprocess:{path}")
    try:
        issue_onto_card(centre, CardSession(reader), holder, pin, "87654321")
    finally:
        reader.close()
    return path


@contextlib.contextmanager
def snatching(work: Path, fake_state: Path, duration: float = 40.0,
              ) -> Iterator[Callable[[], dict[str, Any]]]:
    """Run the attacker (scoped to this test process's children) while the body runs; the
    yielded function stops it and returns its report."""
    report_path = work / "snatch-report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.portsnatch", "--fake-state", str(fake_state),
         "--report", str(report_path), "--scope-pid", str(os.getpid()),
         "--duration", str(duration)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

        def finish() -> dict[str, Any]:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            report: dict[str, Any] = json.loads(report_path.read_text())
            return report

        yield finish
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def received_bytes(report: dict[str, Any]) -> bytes:
    return b"".join(bytes.fromhex(f) for frames in report["frames"].values() for f in frames)
