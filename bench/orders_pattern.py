"""The pattern of one order, recorded from a real nettx order and counted, not assumed.

Two instruments, both on the party processes:

- a recorder (RECORDER, a launcher in front of `nettx serve`) that wraps the connection class
  (host.parties.connection.AsyncConnection: opened, sent, received, closed) and the SQLite
  commit paths (host.storage.sqlite.transaction, and Database.commit, a group commit's
  COMMIT on the database's thread: the durable commits, each one fsync) and
  writes one line per event, with
  time.time(), to a file. Every frame of an order passes the seller (the holder talks only
  to it, the card manager and the delivery company only answer it), so the three files give
  every connection, every request/answer and its size, and where each party commits;
- strace (`strace -f -ttt -e trace=connect,accept,accept4,fsync,fdatasync,sendto,sendmsg`,
  a launcher too), whose system calls inside a timed window of N orders give the new TCP
  connections, the fsyncs and the frames sent per order at each party. This counts the
  floor's processes the same way.

`compile_pattern` turns the recorded events of one order into the `Pattern` the floor
(bench/floor_parties.py) replays: per party, one script per request it receives, from that
request to the next one. A script may open a new connection to a peer (OPEN) or take one the
party keeps open from an earlier order (USE: the seller's pooled sessions), and a connection
a script does not close stays open for the next script that uses one to the same peer.
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
        raw = RawMessage.parse(body)
        if raw.type == "frame":  # a session's frame: name what it carries
            return "frame/" + str(RawMessage.parse(raw.body.map["body"]).type)
        return str(raw.type)
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
# a group commit's COMMIT, on the database's committer thread
group_commit = s.Database.commit
def _group_commit(self):
    group_commit(self)
    if self._full:
        note(ev="commit")
s.Database.commit = _group_commit
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
    OPEN = "open"  # a new connection to `peer`
    USE = "use"  # a connection to `peer` kept open from an earlier request (a pooled one)
    CLOSE = "close"
    COMMIT = "commit"


@dataclass(frozen=True)
class Step:
    """One thing a party does while serving one request, in order. conn 0 is the connection
    the request came on; others are connections to `peer` (OPEN: new, USE: kept open), and a
    SEND on one of them is a request the peer serves with its script number `script`."""

    op: Op
    conn: int = 0
    size: int = 0  # bytes on the wire, the 4-byte length included
    label: str = ""
    peer: str = ""
    script: int = 0


@dataclass(frozen=True)
class Pattern:
    """One order: the holder's connections to the seller, each the seller scripts of the
    requests the holder sends on it, in order; and each party's scripts."""

    holder: tuple[tuple[int, ...], ...]  # per holder connection, indexes into scripts["seller"]
    scripts: dict[str, tuple[tuple[Step, ...], ...]]

    def to_json(self) -> str:
        return json.dumps({"holder": self.holder,
                           "scripts": {r: [[asdict(s) for s in sc] for sc in scs]
                                       for r, scs in self.scripts.items()}})

    @classmethod
    def from_json(cls, text: str) -> Pattern:
        data = json.loads(text)
        return cls(tuple(tuple(c) for c in data["holder"]),
                   {r: tuple(tuple(Step(**{**s, "op": Op(s["op"])}) for s in sc)
                           for sc in scs)
                    for r, scs in data["scripts"].items()})

    def round_trips(self) -> int:
        """Requests answered, over every connection of the order (each answer is one send on
        the connection its request came on)."""
        return sum(1 for scs in self.scripts.values() for sc in scs for s in sc
                   if s.op == Op.SEND and s.conn == 0)

    def connections(self) -> int:
        """New TCP connections: the holder's, and every OPEN (a USE is an old one)."""
        return len(self.holder) + sum(1 for scs in self.scripts.values() for sc in scs
                                      for s in sc if s.op == Op.OPEN)

    def commits(self) -> dict[str, int]:
        return {r: sum(1 for sc in scs for s in sc if s.op == Op.COMMIT)
                for r, scs in self.scripts.items()}

    def frames(self) -> list[str]:
        """The order's frames as the seller saw them, for the report: who to whom (H the
        holder, S the seller, I the card manager, D the delivery company), type, bytes;
        `+` marks a new connection to a party, `=` a kept one."""
        out = []
        for connection in self.holder:
            for i in connection:
                peers = {0: "H"}
                for s in self.scripts["seller"][i]:
                    if s.op in (Op.OPEN, Op.USE):
                        peers[s.conn] = {"issuer": "I", "delivery": "D"}.get(s.peer, "?")
                        out.append(f"S{'+' if s.op is Op.OPEN else '='}{peers[s.conn]}")
                    elif s.op in (Op.RECV, Op.SEND):
                        way = f"{peers[s.conn]}→S" if s.op is Op.RECV else f"S→{peers[s.conn]}"
                        out.append(f"{way} {s.label}:{s.size}")
                    elif s.op == Op.COMMIT:
                        out.append("S commit")
        return out


def read_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compile_pattern(events: dict[str, list[dict]], start: float, end: float) -> Pattern:
    """The pattern of the one order whose events fall in [start, end), every party's. Each
    request a party receives on a connection it accepted starts a script, which runs until
    the next such request (the recording has one holder: nothing else interleaves). Which
    connection is whose is taken from the whole recording: a pooled connection was opened
    in an earlier order."""
    opened: set[tuple[str, int]] = set()
    ports: dict[tuple[str, int], tuple[int, int]] = {}  # (role, conn) -> (local, peer) port
    for role, evs in events.items():
        for e in evs:
            if e["ev"] == "conn":
                ports[(role, e["conn"])] = (e["local"], e["peer"])
            elif e["ev"] == "open":
                opened.add((role, e["conn"]))
    accepted_from = {peer: key for key, (_local, peer) in ports.items() if key not in opened}
    # an opened connection's far end: the accepted connection whose peer port is our port
    far = {key: accepted_from[ports[key][0]] for key in opened
           if ports.get(key, (0, 0))[0] in accepted_from}
    window = {r: [e for e in evs if start <= e["t"] < end] for r, evs in events.items()}
    scripts: dict[str, list[list[Step]]] = {r: [] for r in ROLES}
    # (role, accepted conn, n-th request on it in the window) -> its script number
    request_script: dict[tuple[str, int, int], int] = {}
    # a SEND to a peer, to be told the peer's script: (role, script, step) -> (far, n-th)
    pending: dict[tuple[str, int, int], tuple[tuple[str, int], int]] = {}
    holder: dict[int, list[int]] = {}  # the seller's accepted conns from the holder
    for role in ROLES:
        requests: dict[int, int] = {}  # accepted conn -> requests seen on it
        sends: dict[int, int] = {}  # opened conn -> requests sent on it
        current: list[Step] | None = None
        conn0 = -1
        local: dict[int, int] = {}  # conn id -> its number in the current script
        for e in window.get(role, []):
            ev, cid = e["ev"], e.get("conn")
            accepted = cid is not None and (role, cid) not in opened
            if ev == "recv" and accepted:
                n = requests.get(cid, 0)
                requests[cid] = n + 1
                request_script[(role, cid, n)] = len(scripts[role])
                if role == "seller":  # only holders connect to the seller
                    holder.setdefault(cid, []).append(len(scripts[role]))
                current, conn0, local = [], cid, {cid: 0}
                scripts[role].append(current)
                current.append(Step(Op.RECV, 0, e["size"], e["label"]))
                continue
            if current is None:
                continue
            if ev == "commit":
                current.append(Step(Op.COMMIT))
            elif ev == "send" and cid == conn0:
                current.append(Step(Op.SEND, 0, e["size"], e["label"]))
            elif accepted:
                continue  # another accepted connection (an idle one closed, say)
            elif ev == "open":
                local[cid] = len(local)
                peer = far[(role, cid)][0] if (role, cid) in far else "?"
                current.append(Step(Op.OPEN, local[cid], peer=peer))
            elif ev in ("send", "recv"):
                if cid not in local:  # kept open from an earlier request
                    local[cid] = len(local)
                    peer = far[(role, cid)][0] if (role, cid) in far else "?"
                    current.append(Step(Op.USE, local[cid], peer=peer))
                if ev == "send" and (role, cid) in far:
                    n = sends.get(cid, 0)
                    sends[cid] = n + 1
                    pending[(role, len(scripts[role]) - 1, len(current))] = (far[(role, cid)], n)
                current.append(Step(Op(ev), local[cid], e["size"], e["label"]))
            elif ev == "close" and cid in local:
                current.append(Step(Op.CLOSE, local[cid]))
    for (role, index, at), ((peer, peer_cid), n) in pending.items():
        step = scripts[role][index][at]
        scripts[role][index][at] = Step(step.op, step.conn, step.size, step.label, step.peer,
                                        request_script.get((peer, peer_cid, n), 0))
    return Pattern(tuple(tuple(c) for c in holder.values()),
                   {r: tuple(tuple(sc) for sc in scs) for r, scs in scripts.items()})


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
