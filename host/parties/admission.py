"""Which connections a server keeps when slow peers fill its table (docs/protocol.md, "Wire").

Theory of operation. A slowloris attacker holds connections open by sending just enough to
stay under every timeout: an idle connection, a frame trickled a byte at a time, or a cheap
valid request every few seconds. A per-address limit alone cannot stop it on loopback (every
local attacker and every local holder is 127.0.0.1), and a deadline alone only frees a slot
for the attacker's next connection. What tells an honest peer from a slow one is how long the
server has been *waiting on it*: an honest holder answers within the time its card takes,
an attacker waits for its next tick. So, when a new connection finds the table full (or its
address at its share), the server sheds the connection that has been waiting on its peer the
longest, from the address holding the most connections first, and admits the newcomer.

A connection counts as waiting from its accept, and again from the moment the server starts
sending an answer, until a whole request has arrived; bytes of a half-sent frame do not reset
it. A connection whose request the server is working on is never shed (that time is the
server's, not the peer's), and neither is one that has waited less than `shed_after`: a
newcomer that finds only those is told `busy`, so a burst of new connections cannot push out
a holder in the middle of its purchase.

Sans-IO: the table holds slots and a clock value passed in; shedding is the caller's callback.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 256  # the whole table
    max_per_address: int = 128  # one address never holds more than half of it
    # seconds a connection must have waited on its peer to be shed: longer than an honest
    # card takes between two requests, short enough that a connection replacing a shed one is
    # soon sheddable itself (were it long, an attacker with more connections than slots would
    # use up every sheddable one as it appeared, and honest newcomers would find none)
    shed_after: float = 0.5


@dataclass(eq=False, slots=True)
class Slot:
    """One admitted connection. `waiting_since` is None while the server works on a request."""

    address: str
    shed: Callable[[], None] = field(repr=False)
    waiting_since: float | None = None

    def waiting(self, now: float) -> None:
        self.waiting_since = now

    def serving(self) -> None:
        self.waiting_since = None


class ConnectionTable:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._slots: set[Slot] = set()
        self._per_address: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._slots)

    def count(self, address: str) -> int:
        return self._per_address[address]

    def admit(self, address: str, now: float, shed: Callable[[], None]) -> Slot | None:
        """A slot for a new connection from `address`, shedding one other connection if the
        table or the address's share is full; None if none may be shed (the newcomer is
        refused)."""
        address_full = self._per_address[address] >= self.limits.max_per_address
        if address_full or len(self._slots) >= self.limits.max_connections:
            # a full address sheds one of its own: it may not take another address's slot
            victim = self._victim(now, address if address_full else None)
            if victim is None:
                return None
            self.release(victim)
            victim.shed()
        slot = Slot(address, shed, now)
        self._slots.add(slot)
        self._per_address[address] += 1
        return slot

    def release(self, slot: Slot) -> None:
        """Forget `slot` (idempotent: a shed connection's own cleanup releases it again)."""
        if slot in self._slots:
            self._slots.remove(slot)
            self._per_address[slot.address] -= 1
            if not self._per_address[slot.address]:
                del self._per_address[slot.address]

    def _victim(self, now: float, address: str | None) -> Slot | None:
        """The connection to shed: among those waiting on their peer for at least
        `shed_after` (from `address` only, if given), the one from the address with the most
        connections, and of those the one waiting longest."""
        best: Slot | None = None
        best_key = (0, 0.0)
        for slot in self._slots:
            if slot.waiting_since is None or (address is not None and slot.address != address):
                continue
            waited = now - slot.waiting_since
            if waited < self.limits.shed_after:
                continue
            key = (self._per_address[slot.address], waited)
            if best is None or key > best_key:
                best, best_key = slot, key
        return best
