"""The minimal echo card: the floor of a vpcd card process, independent of nettx.

    python bench/minimal_echo.py HOST:PORT

A plain socket loop speaking vsmartcard's vpcd protocol: every message is a 2-byte
big-endian length and that many bytes; a 1-byte message is a control code (0 power off,
1 power on, 2 reset: no answer; 4: answer the ATR); anything longer is a command APDU,
answered 90 00. TCP_NODELAY, and TCP_QUICKACK re-armed before every recv (vpcd writes a
frame's length and body in two sends). It imports nothing from the project, so it measures
what any card process must pay, not what our own loop pays (bench/echo_card.py does that).
It ends when the reader closes the connection, or on SIGTERM.
"""

import socket
import sys
import time

# T=1 only, IFSC 254, historical bytes "nettx": the same ATR as our card, so pcscd treats
# both cards alike
ATR = bytes.fromhex("3B 8B 81 31 FE 45 80 73 00 00 C0 55 6E 65 74 74 78 95")
OK = b"\x00\x02\x90\x00"  # framed 90 00


def connect(host: str, port: int) -> socket.socket:
    deadline = time.monotonic() + 15  # the reader may still be starting
    while True:
        try:
            return socket.create_connection((host, port))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def serve(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    while True:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        data = sock.recv(65536)
        if not data:
            return
        buf += data
        while len(buf) >= 2 and len(buf) >= 2 + (size := int.from_bytes(buf[:2], "big")):
            frame, buf = buf[2:2 + size], buf[2 + size:]
            if size > 1:
                sock.sendall(OK)
            elif frame == b"\x04":
                sock.sendall(len(ATR).to_bytes(2, "big") + ATR)


def main(argv: list[str]) -> int:
    host, _, port = argv[0].rpartition(":") if len(argv) == 1 else ("", "", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        print("usage: python bench/minimal_echo.py HOST:PORT", file=sys.stderr)
        return 2
    try:
        serve(connect(host or "127.0.0.1", int(port)))
    except OSError as exc:  # no reader came, or it went away mid-frame
        print(f"error: reader at {host or '127.0.0.1'}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
