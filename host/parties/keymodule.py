"""A party's key module: its row inside the nettx applet, in-process (a software security
module) or on a card behind any reader. Every key operation a server does goes through the
card's own commands (MSE, PSO, INTERNAL / EXTERNAL AUTHENTICATE), so there is one code path
for keys and no pair key ever sits in a server's memory outside the applet.

The applet's volatile state (the peer set by MSE, the outstanding challenge) belongs to one
conversation at a time, so a module lends whole sessions: software modules keep a small pool
of identical applets; a card is a pool of one. A software module lends, of its idle applets,
one whose peer already is the one asked for (peer affinity), so MSE runs only when no idle
applet has that peer; then the least recently used one changes peer, and the others keep
theirs.

Pair keys are computed once per peer: the applets of a software pool share one RAM cache of
derived pair keys (card_applet/pairkeys.py), so a MSE to a peer any of them has met skips the
Horner evaluation of the row; a card keeps its own (its last few peers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from card_applet.pairkeys import PairKeyCache
from card_applet.sw import SW
from host.errors import EnvelopeError, ErrorCode, Refused
from host.parties.softcard import software_card
from terminal.errors import ApduError
from terminal.session import CardSession, HandshakeAnswer

DEFAULT_POOL = 32  # confirmations hold a session across a network round trip
# peers whose pair keys a software module keeps: a server meets every holder, and an LRU
# smaller than the set of peers in rotation would miss every time (~100 bytes a peer)
SOFTWARE_CACHE = 4096
SESSION_WAIT = 30.0


class KeyModule:
    def __init__(self, identifier: str, sessions: Sequence[CardSession], *,
                 keep_peer: bool = False) -> None:
        self.identifier = identifier
        #: every session of the pool, lent or idle (for tests and benches)
        self.sessions: tuple[CardSession, ...] = tuple(sessions)
        # An applet only this module talks to keeps its peer between operations, so MSE
        # (k field multiplications and an HKDF) runs only when the peer changes. A card
        # behind a reader can be reset behind our back: it gets MSE every time.
        self._keep_peer = keep_peer
        self._peer: dict[int, str] = {}  # id(session) -> the peer its applet has (keep_peer)
        # idle sessions, least recently given back first; and by the peer their applet has
        self._idle: OrderedDict[int, CardSession] = OrderedDict(
            (id(session), session) for session in self.sessions)
        self._idle_with: dict[str, list[CardSession]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()

    @classmethod
    def software(cls, identifier: str, row: Sequence[int], pool: int = DEFAULT_POOL,
                 cache: int = SOFTWARE_CACHE) -> KeyModule:
        shared = PairKeyCache(cache)
        return cls(identifier, [software_card(identifier, row, pair_keys=shared)
                                for _ in range(pool)], keep_peer=True)

    @classmethod
    def on_card(cls, session: CardSession, pin: str) -> KeyModule:
        """`session` has passed authenticate_card(): the PIN goes to that card only."""
        info = session.require_authenticated()
        if info.holder_id is None:
            raise Refused(ErrorCode.NO_KEY, "the card in this reader is not personalised")
        session.verify_pin(pin)
        return cls(info.holder_id, [session])

    @contextlib.asynccontextmanager
    async def session(self, peer: str) -> AsyncIterator[CardSession]:
        """A session whose peer is set to `peer`, for this caller alone."""
        card = await self._borrow(peer)
        try:
            yield card
        finally:
            self._give_back(card)

    # -- the pool ---------------------------------------------------------------------------
    # The operations below borrow and give back without a context manager: an async
    # generator's enter and exit cost more than the APDU they wrap.

    def _take(self, peer: str) -> CardSession | None:
        """An idle session, one whose applet already has `peer` if there is one."""
        same = self._idle_with.get(peer)
        if same:
            card = same.pop()  # the most recently given back: its peer is the freshest
            del self._idle[id(card)]
            return card
        if not self._idle:
            return None
        _, card = self._idle.popitem(last=False)  # the least recently used changes peer
        had = self._peer.get(id(card))
        if had is not None:
            self._idle_with[had].remove(card)
        return card

    async def _borrow(self, peer: str) -> CardSession:
        card = self._take(peer)
        if card is None:  # all busy: wait, bounded (the common case takes one at once)
            try:
                async with asyncio.timeout(SESSION_WAIT):
                    while (card := self._take(peer)) is None:
                        await self._wait()
            except TimeoutError:
                raise Refused(ErrorCode.BUSY, f"no key session free within "
                              f"{SESSION_WAIT:g} s") from None
        try:
            if self._peer.get(id(card)) != peer:
                self._peer.pop(id(card), None)
                try:
                    card.set_peer(peer)
                except ApduError as exc:
                    raise Refused(ErrorCode.BAD_PEER, f"{peer!r}: {exc}") from exc
                if self._keep_peer:
                    self._peer[id(card)] = peer
        except BaseException:
            self._give_back(card)
            raise
        return card

    async def _wait(self) -> None:
        """Until a session is given back (then the caller tries again)."""
        woken = asyncio.get_running_loop().create_future()
        self._waiters.append(woken)
        try:
            await woken
        except BaseException:
            if woken.done() and not woken.cancelled():
                self._wake()  # given up after being woken: the wake-up goes to the next
            else:
                woken.cancel()
            raise

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _give_back(self, card: CardSession) -> None:
        self._idle[id(card)] = card
        peer = self._peer.get(id(card))
        if peer is not None:
            self._idle_with.setdefault(peer, []).append(card)
        if self._waiters:
            self._wake()

    async def seal(self, peer: str, plaintext: bytes, aad: bytes, context: bytes) -> bytes:
        card = await self._borrow(peer)
        try:
            return card.encrypt(plaintext, aad, context)
        except ApduError as exc:  # a card reset behind our back, its counter exhausted
            raise Refused(ErrorCode.KEY_MODULE, f"sealing for {peer}: {exc}") from exc
        finally:
            self._give_back(card)

    async def open(self, peer: str, box: bytes, aad: bytes, context: bytes,
                   what: str = "part") -> bytes:
        card = await self._borrow(peer)
        try:
            return card.decrypt(box, aad, context)
        except ApduError as exc:
            if exc.sw == SW.INCORRECT_SM_DATA:
                raise EnvelopeError(ErrorCode.FORGED, f"the {what} does not authenticate "
                                    f"(not sealed by {peer} for this order)") from exc
            if exc.sw in (SW.WRONG_DATA, SW.WRONG_LENGTH):
                raise EnvelopeError(ErrorCode.MALFORMED, f"the {what} is not a sealed box "
                                    f"({exc})") from exc
            # anything else is our module's state (a card reset, PIN no longer verified)
            raise Refused(ErrorCode.KEY_MODULE, f"opening the {what}: {exc}") from exc
        finally:
            self._give_back(card)

    async def mac(self, peer: str, body: bytes, context: bytes) -> bytes:
        """A MAC is a seal of nothing with the body as associated data: the card's seal key
        carries direction and purpose, so the MAC does too."""
        return await self.seal(peer, b"", body, context)

    async def check_mac(self, peer: str, body: bytes, mac: bytes, context: bytes,
                        what: str) -> None:
        if await self.open(peer, mac, body, context, what) != b"":
            raise EnvelopeError(ErrorCode.FORGED, f"the {what} MAC carries data")

    async def answer(self, peer: str, challenge: bytes) -> bytes:
        """Our half of claim 7's confirmation: prove to `peer` that we hold our row."""
        card = await self._borrow(peer)
        try:
            return card.internal_authenticate(challenge)
        except ApduError as exc:
            raise Refused(ErrorCode.BAD_CHALLENGE, str(exc)) from exc
        finally:
            self._give_back(card)

    async def confirm(self, peer: str, exchange: Callable[[bytes], Awaitable[bytes]]) -> None:
        """Confirm `peer` before sending it anything: challenge, let `exchange` carry the
        challenge to it and bring back its answer, and check the answer on the card."""
        card = await self._borrow(peer)
        try:
            challenge = card.get_challenge()
            response = await exchange(challenge)
            try:
                card.external_authenticate(response)
            except ApduError as exc:
                raise Refused(ErrorCode.UNCONFIRMED, f"{peer} failed confirmation: it does "
                                       f"not hold the row for its identifier") from exc
        finally:
            self._give_back(card)

    async def handshake(self, peer: str, *, initiator: bool, initiator_nonce: bytes,
                        responder_nonce: bytes,
                        peer_proof: bytes | None = None) -> HandshakeAnswer:
        """One step of a session handshake with `peer` (docs/protocol.md, "Sessions"): our
        proof over both nonces, and with `peer_proof` (checked inside the applet) the two
        session keys. The pair key and the row stay in the applet; the session keys come
        out, as the host side of any secure channel holds its session keys."""
        card = await self._borrow(peer)
        try:
            return card.general_authenticate(initiator, initiator_nonce, responder_nonce,
                                             peer_proof)
        except ApduError as exc:
            if exc.sw == SW.AUTHENTICATION_FAILED:
                raise Refused(ErrorCode.UNCONFIRMED, f"{peer} failed the session "
                              f"handshake: it does not hold the row for its identifier") \
                    from exc
            raise Refused(ErrorCode.KEY_MODULE, f"session handshake with {peer}: {exc}") \
                from exc
        finally:
            self._give_back(card)
