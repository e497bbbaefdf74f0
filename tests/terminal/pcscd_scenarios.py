"""Scenarios that need namespaces of their own, run as root by test_pcsc_stack.py as
`unshare --net --mount -- python -m tests.terminal.pcscd_scenarios NAME ...`.

Each one builds its little world inside the namespaces it was started in (never the
machine's network or /run/pcscd), runs pcscd-vpcd there, and prints one JSON line of facts
for the test to judge:

  remote-card    a "remote host" (its own network namespace, joined by a veth pair at
                 192.0.2.2, a documentation address) tries to insert a fake card through
                 vpcd's ports at this host's 192.0.2.1; then an honest card on loopback.
  system-pcscd   a real pcscd in this namespace's /run/pcscd plays the system's; our private
                 pcscd runs beside it; the system one's PID, pid file and socket are
                 compared before and after.
  fake-card      (run inside the remote host) connect to HOST:PORT and answer as a card.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from card_applet.vpcd import FrameBuffer, VpcdControl, encode_frame

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "vpcd_config" / "pcscd-vpcd"
SLOT0 = "Virtual PCD 00 00"
HOST_ADDR, REMOTE_ADDR = "192.0.2.1", "192.0.2.2"  # RFC 5737 TEST-NET-1, inside our namespace
FAKE_ATR = bytes.fromhex("3B8A8001") + b"rogue-card"[:10]


def sh(*argv: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")
    return out.stdout


@contextlib.contextmanager
def private_pcscd(port: int, run_dir: Path, *flags: str) -> Iterator[tuple[int, str]]:
    """pcscd-vpcd start --private: (pid, stderr); PCSCLITE_CSOCK_NAME set for this process."""
    out = subprocess.run([str(SCRIPT), "start", "--private", "--port", str(port),
                          "--run-dir", str(run_dir), *flags],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"pcscd-vpcd start failed: {out.stderr.strip()}")
    pid = next(int(line.split("=", 1)[1]) for line in out.stdout.splitlines()
               if line.startswith("PCSCD_PID="))
    # before the first SCardEstablishContext of this process: libpcsclite reads it once
    os.environ["PCSCLITE_CSOCK_NAME"] = str(run_dir / "sock" / "pcscd.comm")
    try:
        yield pid, out.stderr
    finally:
        subprocess.run([str(SCRIPT), "stop", "--run-dir", str(run_dir)], capture_output=True,
                       timeout=60)


def honest_card_holder(state: Path, port: int) -> str:
    """The holder the card on 127.0.0.1:port answers with through pcscd (pyscard)."""
    from terminal.cardproc import CardProcess
    from terminal.pcsc import wait_for_card
    from terminal.session import CardSession

    with CardProcess(state, "127.0.0.1", port):
        reader = wait_for_card(SLOT0, timeout=15)
        try:
            return CardSession(reader).select().holder_id
        finally:
            reader.close()


# -- remote-card ------------------------------------------------------------------------------


@contextlib.contextmanager
def remote_host() -> Iterator[int]:
    """A network namespace joined to ours by a veth pair: we are 192.0.2.1, it is .2.
    Yields the PID whose namespace it is (for nsenter)."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{holder.pid}/ns/net") == ours:
            if time.monotonic() > deadline:
                raise RuntimeError("remote namespace did not appear")
            time.sleep(0.01)
        sh("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "rem0")
        sh("ip", "link", "set", "rem0", "netns", str(holder.pid))
        sh("ip", "addr", "add", f"{HOST_ADDR}/24", "dev", "lan0")
        sh("ip", "link", "set", "lan0", "up")
        remote = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
        sh(*remote, "ip", "addr", "add", f"{REMOTE_ADDR}/24", "dev", "rem0")
        sh(*remote, "ip", "link", "set", "rem0", "up")
        sh(*remote, "ip", "link", "set", "lo", "up")
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def rogue_card_seen(seconds: float) -> bool:
    """Whether pcscd shows the rogue card's ATR in slot 0 within `seconds`."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise RuntimeError(f"SCardEstablishContext: {hresult:#x}")
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            hresult, states = scard.SCardGetStatusChange(
                context, 0, [(SLOT0, scard.SCARD_STATE_UNAWARE)])
            if hresult == scard.SCARD_S_SUCCESS and bytes(states[0][2]) == FAKE_ATR:
                return True
            time.sleep(0.1)
        return False
    finally:
        scard.SCardReleaseContext(context)


def remote_card(args: argparse.Namespace) -> dict[str, object]:
    sh("ip", "link", "set", "lo", "up")
    flags = ["--all-interfaces"] if args.all_interfaces else []
    with remote_host() as remote, private_pcscd(args.port, args.run_dir, *flags) as (_pid, err):
        attacker = subprocess.Popen(
            ["nsenter", f"--net=/proc/{remote}/ns/net", sys.executable, "-m",
             "tests.terminal.pcscd_scenarios", "fake-card", "--host", HOST_ADDR,
             "--port", str(args.port), "--seconds", "4"],
            cwd=REPO, stdout=subprocess.PIPE, text=True)
        seen = rogue_card_seen(5)
        attack_out, _ = attacker.communicate(timeout=15)
        attack = json.loads(attack_out.splitlines()[-1])
        if seen:
            from terminal.pcsc import wait_until_card_gone
            wait_until_card_gone(SLOT0)
        holder = honest_card_holder(args.state, args.port)
    return {"warning": err.strip(), "rogue_card_seen": seen, "remote": attack,
            "loopback_holder": holder}


def fake_card(args: argparse.Namespace) -> dict[str, object]:
    """Bounded: tries each of vpcd's two ports for `seconds`, then stops by itself."""
    outcome: dict[str, str] = {}
    start = time.monotonic()
    for half, port in enumerate((args.port, args.port + 1), start=1):
        deadline = start + args.seconds * half / 2
        while time.monotonic() < deadline:
            try:
                conn = socket.create_connection((args.host, port), timeout=1,
                                                source_address=(REMOTE_ADDR, 0))
            except OSError as exc:
                outcome[str(port)] = type(exc).__name__
                time.sleep(0.2)
                continue
            outcome[str(port)] = "accepted"
            if port == args.port:
                answer_as_card(conn, deadline)
            conn.close()
            break
    return {"ports": outcome}


def answer_as_card(conn: socket.socket, deadline: float) -> None:
    frames = FrameBuffer()
    conn.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = conn.recv(4096)
        except TimeoutError:
            continue
        if not data:
            return
        for frame in frames.feed(data):
            if frame == bytes([VpcdControl.GET_ATR]):
                conn.sendall(encode_frame(FAKE_ATR))
            elif len(frame) > 1:  # an APDU: this is where a PIN would arrive
                conn.sendall(encode_frame(b"\x90\x00"))


# -- system-pcscd -----------------------------------------------------------------------------


def system_state() -> dict[str, object]:
    comm, pid_file = Path("/run/pcscd/pcscd.comm"), Path("/run/pcscd/pcscd.pid")
    pid = int("".join(ch for ch in pid_file.read_text() if ch.isdigit()))
    return {"pid": pid, "alive": Path(f"/proc/{pid}").exists()
            and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2],
            "pid_file": pid_file.read_bytes().hex(), "socket_inode": comm.stat().st_ino,
            "answers": system_pcscd_answers(), "readers": system_readers()}


def without_our_socket() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PCSCLITE_CSOCK_NAME"}


def system_readers() -> str:
    """The reader list as a client of the system pcscd sees it (Debian's vsmartcard-vpcd
    package gives the system pcscd vpcd readers of its own, on 35963 and 35964)."""
    out = subprocess.run(["pcsc_scan", "-r"], env=without_our_socket(), text=True,
                         capture_output=True, timeout=30)
    return out.stdout


def system_pcscd_answers() -> bool:
    """A client on the default socket gets a context from the system pcscd (subprocess:
    this process's libpcsclite is pointed at ours)."""
    code = ("from smartcard import scard; "
            "print(scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)[0])")
    out = subprocess.run([sys.executable, "-c", code], env=without_our_socket(),
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() == "0"


def system_pcscd(args: argparse.Namespace) -> dict[str, object]:
    sh("ip", "link", "set", "lo", "up")
    # this namespace's /run is ours: the "system" pcscd lives there, the machine's is untouched
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "nettx-test-run", "/run")
    system = subprocess.Popen(["pcscd", "--foreground"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not Path("/run/pcscd/pcscd.comm").exists() or not system_pcscd_answers():
            if time.monotonic() > deadline or system.poll() is not None:
                raise RuntimeError("the system pcscd did not start")
            time.sleep(0.1)
        before = system_state()
        with private_pcscd(args.port, args.run_dir) as (ours, _err):
            holder = honest_card_holder(args.state, args.port)
            private_readers = sh("pcsc_scan", "-r")
            during = system_state()
        after = system_state()
        return {"before": before, "during": during, "after": after, "private_pid": ours,
                "holder": holder, "private_readers": private_readers,
                "system_pid_is_the_one_started": before["pid"] == system.pid}
    finally:
        system.terminate()
        system.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["remote-card", "system-pcscd", "fake-card"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--all-interfaces", action="store_true")
    parser.add_argument("--host", default=HOST_ADDR)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    run = {"remote-card": remote_card, "system-pcscd": system_pcscd,
           "fake-card": fake_card}[args.scenario]
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
