"""The no-work floor of an order: one small asyncio server per party that does what the
party's recorded pattern says and nothing else.

    python bench/floor_parties.py -v ROLE serve --pattern P.json --dir DIR
                                  [--peer issuer=PORT] [--peer delivery=PORT]
                                  [--persistent] [--no-fsync] --listen 127.0.0.1:0

P.json is a bench.orders_pattern.Pattern recorded from a real nettx order. Each accepted
connection's first frame names the script to follow (its first body byte); the server then
reads each request frame whole, answers with a frame of the recorded size, opens a new TCP
connection wherever the real party opened one (to the floor peer given by --peer), and where
the real party committed, appends 64 bytes to its own file and fdatasyncs it, on the event
loop, as the real party's SQLite commit does. No CBOR, no crypto, no logging.

The other floor (--persistent --no-fsync): an accepted connection serves one script after
another (each script's first frame names it), a connection the script opens to a peer is
taken from a pool of idle ones and goes back to it where the real party closed it, and a
commit writes nothing.

The arguments have `nettx serve`'s shape, so host.cli.partyproc.PartyProcess starts and stops
it (it prints "listening on HOST:PORT" first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script: bench/ is not a package
    sys.path.insert(0, str(REPO))

from bench.orders_pattern import Op, Pattern, Step  # noqa: E402

LENGTH = struct.Struct(">I")
RECORD = b"\0" * 64


def filler(size: int, tag: int = 0) -> bytes:
    """A frame of `size` bytes on the wire: the length, the tag byte, then zeros."""
    body = bytes([tag]) + b"\0" * max(0, size - LENGTH.size - 1)
    return LENGTH.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    return await reader.readexactly(n)


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Floor:
    def __init__(self, role: str, pattern: Pattern, peers: dict[str, int], log: Path,
                 persistent: bool = False, fsync: bool = True) -> None:
        self.scripts = pattern.scripts[role]
        self.peers = peers
        self.fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.persistent, self.fsync = persistent, fsync
        self.idle: dict[str, list[Streams]] = {}  # persistent: open connections by peer

    def commit(self) -> None:
        if not self.fsync:
            return
        os.write(self.fd, RECORD)
        os.fdatasync(self.fd)

    async def connect(self, peer: str) -> Streams:
        idle = self.idle.get(peer)
        if self.persistent and idle:
            return idle.pop()
        return await asyncio.open_connection("127.0.0.1", self.peers[peer])

    def release(self, peer: str, conn: Streams) -> None:
        if self.persistent:
            self.idle.setdefault(peer, []).append(conn)
        else:
            conn[1].close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {
            0: (reader, writer)}
        try:
            while True:
                first = await read_frame(reader)
                await self.run(self.scripts[first[0]], conns, first_read=True)
                if not self.persistent:
                    await reader.read()  # until the peer closes
                    return
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            for _r, w in conns.values():
                w.close()

    async def run(self, script: tuple[Step, ...],
                  conns: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
                  first_read: bool) -> None:
        tags: dict[int, int] = {}  # opened conn -> the peer's script, sent in its first frame
        peers: dict[int, str] = {}  # opened conn -> its peer
        for step in script:
            if step.op is Op.RECV:
                if first_read and step.conn == 0:
                    first_read = False  # already read: it named this script
                    continue
                await read_frame(conns[step.conn][0])
            elif step.op is Op.SEND:
                w = conns[step.conn][1]
                w.write(filler(step.size, tags.pop(step.conn, 0)))
                await w.drain()
            elif step.op is Op.OPEN:
                conns[step.conn] = await self.connect(step.peer)
                tags[step.conn], peers[step.conn] = step.script, step.peer
            elif step.op is Op.CLOSE:
                self.release(peers.pop(step.conn), conns.pop(step.conn))
            elif step.op is Op.COMMIT:
                self.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", dest="role", required=True, choices=("seller", "issuer",
                                                                     "delivery"))
    parser.add_argument("command", choices=("serve",))
    parser.add_argument("--pattern", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--peer", action="append", default=[], help="ROLE=PORT")
    parser.add_argument("--persistent", action="store_true",
                        help="keep connections: accepted ones serve script after script, "
                             "opened ones are pooled")
    parser.add_argument("--no-fsync", action="store_true", help="commits write nothing")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    args = parser.parse_args(argv)
    peers = {r: int(p) for r, p in (x.split("=", 1) for x in args.peer)}
    host, port = args.listen.rsplit(":", 1)
    floor = Floor(args.role, Pattern.from_json(args.pattern.read_text()), peers,
                  args.dir / f"{args.role}.floor.log", args.persistent, not args.no_fsync)

    async def serve() -> None:
        server = await asyncio.start_server(floor.serve, host, int(port))
        bound = server.sockets[0].getsockname()
        print(f"{args.role} floor listening on {bound[0]}:{bound[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
