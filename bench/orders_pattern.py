"""The pattern of one order, recorded from a real nettx order and counted, not assumed.

Two instruments, both on the party processes:

- a recorder (RECORDER, a launcher in front of `nettx serve`) that wraps the connection class
  (host.parties.connection.AsyncConnection: opened, sent, received, closed) and the SQLite
  commit path (host.storage.sqlite.transaction: the durable commits, each one fsync) and
  writes one line per event, with
  time.time(), to a file. Every frame of an order passes the seller (the holder talks only
  to it, the card manager and the delivery company only answer it), so the three files give
  every connection, every request/answer and its size, and where each party commits;
- strace (`strace -f -ttt -e trace=connect,accept,accept4,fsync,fdatasync,sendto,sendmsg`,
  a launcher too), whose system calls inside a timed window of N orders give the new TCP
  connections, the fsyncs and the frames sent per order at each party. This counts the
  floor's processes the same way.

`compile_pattern` turns the recorded events of one order into the `Pattern` the floor
(bench/floor_parties.py) replays: per party, one script per connection it accepts.
"""

from __future__ import annotations

import enum
import json
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

ROLES = ("seller", "issuer", "delivery")

RECORDER = """\
import contextlib, itertools, json, sys, time
out = open(sys.argv.pop(1), "a", buffering=1)
sys.argv = ["nettx", *sys.argv[1:]]
from host.parties import connection as c
from host.protocol.wire import RawMessage
from host.storage import sqlite as s
ids = itertools.count()
def note(**event):
    out.write(json.dumps({"t": time.time(), **event}) + "\\n")
def label(body):
    try:
        return str(RawMessage.parse(body).type)
    except Exception:
        return "?"
init, opener, send_raw, receive_frame = (c.AsyncConnection.__init__, c.AsyncConnection.open,
                                         c.AsyncConnection.send_raw,
                                         c.AsyncConnection.receive_frame)
close, refuse, transaction = c.AsyncConnection.close, c.AsyncConnection.refuse, s.transaction
def _init(self, reader, writer, *a, **k):
    init(self, reader, writer, *a, **k)
    self.rec_id = next(ids)
    note(ev="conn", conn=self.rec_id, local=writer.get_extra_info("sockname")[1],
         peer=writer.get_extra_info("peername")[1])
async def _open(cls, host, port, *a, **k):
    conn = await opener.__func__(cls, host, port, *a, **k)
    note(ev="open", conn=conn.rec_id)
    return conn
async def _send_raw(self, data):
    await send_raw(self, data)
    note(ev="send", conn=self.rec_id, size=len(data), label=label(data[4:]))
async def _receive_frame(self, *a, **k):
    data = await receive_frame(self, *a, **k)
    if data is None:
        note(ev="eof", conn=self.rec_id)
    else:
        note(ev="recv", conn=self.rec_id, size=len(data) + 4, label=label(data))
    return data
async def _close(self):
    note(ev="close", conn=self.rec_id)
    await close(self)
def _refuse(self, data):
    note(ev="close", conn=self.rec_id)
    refuse(self, data)
@contextlib.contextmanager
def _transaction(conn):
    with transaction(conn) as inner:
        yield inner
    # a commit that does not wait for the disk (synchronous=NORMAL) costs no fsync
    if conn.execute("PRAGMA synchronous").fetchone()[0] >= 2:
        note(ev="commit")
c.AsyncConnection.__init__, c.AsyncConnection.open = _init, classmethod(_open)
c.AsyncConnection.send_raw, c.AsyncConnection.receive_frame = _send_raw, _receive_frame
c.AsyncConnection.close, c.AsyncConnection.refuse = _close, _refuse
s.transaction = _transaction
import runpy
runpy.run_module("host.cli", run_name="__main__")
"""

STRACED = ("connect", "accept", "accept4", "fsync", "fdatasync", "sendto", "sendmsg")
STRACE_LINE = re.compile(rb"^\d+\s+(\d+\.\d+)\s+(?:<\.\.\. )?(\w+)\(?.*?= (-?\d+)(.*)$")


def strace_launcher(out: Path, inner: list[str]) -> list[str]:
    """`inner` under strace, every thread, the connection and fsync calls, wall-clock times."""
    if shutil.which("strace") is None:
        raise RuntimeError("strace is not installed: the bench counts with it")
    return ["strace", "-f", "-qq", "-ttt", "-e", "trace=" + ",".join(STRACED), "-o", str(out),
            *inner]


def strace_counts(path: Path, start: float, end: float) -> Counter[str]:
    """Successful calls by name in [start, end) (wall clock); accept and accept4 as accept,
    fsync and fdatasync as fsync, and a one-byte send as `wakeup`, not a frame (an event
    loop woken from another thread: asyncio writes one byte to its self-pipe, a socket
    pair, when a group commit releases its answers). An unfinished call counts when it
    resumes."""
    counts: Counter[str] = Counter()
    for line in path.read_bytes().splitlines():
        if b"unfinished" in line:
            continue
        m = STRACE_LINE.match(line)
        if not m or not start <= float(m.group(1)) < end:
            continue
        # asyncio connects without blocking: EINPROGRESS is a connection being made
        if int(m.group(3)) < 0 and b"EINPROGRESS" not in m.group(4):
            continue
        name = m.group(2).decode()
        name = {"accept4": "accept", "fdatasync": "fsync", "sendmsg": "sendto"}.get(name, name)
        if name == "sendto" and int(m.group(3)) == 1:
            name = "wakeup"
        counts[name] += 1
    return counts


# -- the pattern ------------------------------------------------------------------------------


class Op(enum.StrEnum):
    RECV = "recv"
    SEND = "send"
    OPEN = "open"
    CLOSE = "close"
    COMMIT = "commit"


@dataclass(frozen=True)
class Step:
    """One thing a party does while serving one accepted connection, in order. conn 0 is
    the accepted connection; others are connections it opens to `peer`, whose script
    there is number `script`."""

    op: Op
    conn: int = 0
    size: int = 0  # bytes on the wire, the 4-byte length included
    label: str = ""
    peer: str = ""
    script: int = 0


@dataclass(frozen=True)
class Pattern:
    """One order: the seller scripts the holder opens, in order, and each party's scripts."""

    holder: tuple[int, ...]  # indexes into scripts["seller"], one per holder connection
    scripts: dict[str, tuple[tuple[Step, ...], ...]]

    def to_json(self) -> str:
        return json.dumps({"holder": self.holder,
                           "scripts": {r: [[asdict(s) for s in sc] for sc in scs]
                                       for r, scs in self.scripts.items()}})

    @classmethod
    def from_json(cls, text: str) -> Pattern:
        data = json.loads(text)
        return cls(tuple(data["holder"]),
                   {r: tuple(tuple(Step(**{**s, "op": Op(s["op"])}) for s in sc)
                           for sc in scs)
                    for r, scs in data["scripts"].items()})

    def round_trips(self) -> int:
        """Requests answered, over every connection of the order (each answer is one send on
        an accepted connection)."""
        return sum(1 for scs in self.scripts.values() for sc in scs for s in sc
                   if s.op == Op.SEND and s.conn == 0)

    def connections(self) -> int:
        return len(self.holder) + sum(1 for scs in self.scripts.values() for sc in scs
                                      for s in sc if s.op == Op.OPEN)

    def commits(self) -> dict[str, int]:
        return {r: sum(1 for sc in scs for s in sc if s.op == Op.COMMIT)
                for r, scs in self.scripts.items()}

    def frames(self) -> list[str]:
        """The order's frames as the seller saw them, for the report: who to whom (H the
        holder, S the seller, I the card manager, D the delivery company), type, bytes."""
        out = []
        for i in self.holder:
            peers = {0: "H"}
            for s in self.scripts["seller"][i]:
                if s.op == Op.OPEN:
                    peers[s.conn] = {"issuer": "I", "delivery": "D"}.get(s.peer, "?")
                elif s.op in (Op.RECV, Op.SEND):
                    way = f"{peers[s.conn]}→S" if s.op is Op.RECV else f"S→{peers[s.conn]}"
                    out.append(f"{way} {s.label}:{s.size}")
                elif s.op == Op.COMMIT:
                    out.append("S commit")
        return out


def read_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compile_pattern(events: dict[str, list[dict]], start: float, end: float) -> Pattern:
    """The pattern of the one order whose events fall in [start, end), every party's."""
    window = {r: [e for e in evs if start <= e["t"] < end] for r, evs in events.items()}
    # which (role, local conn id) is opened, to whom, and the peer's accepted conn id
    by_local_port = {}  # port -> (role, conn id): the accepted side is named by its peer port
    opened: dict[tuple[str, int], int] = {}
    ports: dict[tuple[str, int], tuple[int, int]] = {}
    for role, evs in window.items():
        for e in evs:
            if e["ev"] == "conn":
                ports[(role, e["conn"])] = (e["local"], e["peer"])
            elif e["ev"] == "open":
                opened[(role, e["conn"])] = 1
    for (role, cid), (_local, peer) in ports.items():
        if (role, cid) not in opened:
            by_local_port[peer] = (role, cid)
    scripts: dict[str, list[list[Step]]] = {r: [] for r in ROLES}
    index: dict[tuple[str, int], int] = {}  # accepted (role, conn) -> its script number
    # scripts are numbered in the order their connections were accepted, every party
    for role, evs in window.items():
        for e in evs:
            if e["ev"] == "conn" and (role, e["conn"]) not in opened:
                index[(role, e["conn"])] = len(scripts[role])
                scripts[role].append([])
    for role, evs in window.items():
        current: int | None = None  # the accepted connection being served
        local: dict[int, int] = {}  # conn id -> its number in the current script
        for e in evs:
            ev, cid = e["ev"], e.get("conn")
            if ev == "conn" and (role, cid) in index:
                current, local = index[(role, cid)], {cid: 0}
                continue
            if current is None:
                continue
            script = scripts[role][current]
            if ev == "open":
                local[cid] = len(local)
                peer_role, peer_cid = by_local_port[ports[(role, cid)][0]]
                script.append(Step(Op.OPEN, local[cid], peer=peer_role,
                                   script=index[(peer_role, peer_cid)]))
            elif ev in ("send", "recv") and cid in local:
                script.append(Step(Op(ev), local[cid], e["size"], e["label"]))
            elif ev == "close" and cid in local and local[cid] != 0:
                script.append(Step(Op.CLOSE, local[cid]))
            elif ev == "commit":
                script.append(Step(Op.COMMIT))
    holder = tuple(index[key] for key in sorted(
        (k for k in index if k[0] == "seller"), key=lambda k: index[k]))
    return Pattern(holder, {r: tuple(tuple(sc) for sc in scs) for r, scs in scripts.items()})


@dataclass(frozen=True)
class Counted:
    """What strace and the recorder counted per order for one shop."""

    shop: str
    orders: int
    round_trips: float  # answers on accepted connections: the recorder's, or the script's
    connections: float  # accept() at the parties: every new TCP connection of the order
    connects: dict[str, float]  # connect() per party (the holder's are in no party)
    fsyncs: dict[str, float]  # fsync + fdatasync per party
    sends: dict[str, float]  # sendto + sendmsg per party: one per frame, frames being small


def per_order(counts: dict[str, Counter[str]], orders: int, shop: str,
              round_trips: float) -> Counted:
    n = max(1, orders)
    return Counted(shop, orders, round_trips,
                   sum(c["accept"] for c in counts.values()) / n,
                   {r: c["connect"] / n for r, c in counts.items()},
                   {r: c["fsync"] / n for r, c in counts.items()},
                   {r: c["sendto"] / n for r, c in counts.items()})


def now() -> float:
    return time.time()
