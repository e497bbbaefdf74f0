"""The card's RAM cache of pair keys: the keys MSE derived for its most recent peers.

Deriving a pair key costs a Horner evaluation of the whole row (k field multiplications,
about 0.2 ms at k = 512) and an HKDF. A party talks to the same few peers again and again
(the holder to its seller, card manager and delivery company within one order), so MSE keeps
the derived keys of the last `capacity` peers and a MSE to one of them skips the Horner.

Why this is safe (docs/apdu.md 1.9): the cache is RAM, cleared whenever the application's
session ends (power on/off, reset, SELECT, leaving the application), so everything in it was
derived by a MSE the same terminal sent in the same session; no command reads it, it holds
nothing the current peer's key did not already expose, and it never outlives the row it was
derived from (`bind`). It changes no command's answer, status word or precondition, only how
long MSE takes.

One cache may be shared by several applets holding the same row (a software key module's
pool of identical applets is one security module with many sessions): then an order costs
one Horner per new peer for the whole pool.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

DEFAULT_CAPACITY = 8  # a card's RAM is small; a holder's order has three peers


class PairKeyCache:
    """A bounded LRU of pair keys by peer identifier, for one row."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a pair key cache holds at least one peer")
        self.capacity = capacity
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()
        self._row: bytes | None = None
        # applets sharing one cache may run on different threads (a server's executor)
        self._lock = threading.Lock()

    def bind(self, row: bytes) -> None:
        """The keys belong to `row`: a different row (a card personalised again, a cache
        handed to another applet by mistake) starts from nothing."""
        with self._lock:
            if self._row is not row and self._row != row:
                self._keys.clear()
                self._row = row

    def get(self, peer: bytes) -> bytes | None:
        with self._lock:
            key = self._keys.get(peer)
            if key is not None:
                self._keys.move_to_end(peer)
            return key

    def put(self, peer: bytes, key: bytes) -> None:
        with self._lock:
            self._keys[peer] = key
            self._keys.move_to_end(peer)
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)
