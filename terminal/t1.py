"""ISO/IEC 7816-3 T=1, the interface device's half, over any `BlockLink`.

Theory of operation. `T1Terminal.transceive` sends a command APDU as I-blocks of at most
IFSC bytes (M bit set on all but the last; each acknowledged by an R-block, rule 2.2), then
collects the response's I-blocks, acknowledging each but the last. The parts are cut as they
go out, not in advance: the card may lower IFSC with S(IFS request) in the middle of a chain
(rule 4), and every part sent after that, or sent again, must fit the new size.

Whatever goes wrong is answered as 7816-3 11.6.3 says: an invalid block (S(WTX) with a
multiplier of 0 among them) or a silent card (BWT, stretched by the card's S(WTX) requests)
gets an R-block naming the N(S) we expect (rule 7.1); an R-block naming our own N(S) gets
our last I-block again (rule 7.2); an S request not answered is repeated (rule 7.3). After
`max_retries` failed attempts at one step, S(RESYNCH) is tried (rule 7.4) and the command
fails with `RetryLimitError`: re-sending it could execute it twice, so that choice is left
to the caller.

A card that never stops asking is bounded too (docs/serial.md, "Bounds"). Per command, the
card may lower IFSC with at most `max_ifs_requests` S(IFS request)s, be granted at most
`max_wtx_wait` seconds of waiting time by S(WTX) (BWT x multiplier each, summed), and send a
response of at most `max_response` bytes (Ne's 65,536 and the status word), in at most as
many blocks. Past any of these the command fails with `CardStalledError`: the card is still
inside the command, so the next one starts with a reset.

The link does the I/O: `send(bytes)` and `receive(timeout)` returning one block's bytes
(possibly invalid) or None when nothing came in time. Tests give it an in-memory card.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NoReturn, Protocol

from card_applet.atr import Edc
from card_applet.t1 import DEFAULT_IFSD, MAX_INF, Block, BlockError, Kind, RError, SType
from terminal.errors import CardStalledError, LineProtocolError, RetryLimitError

log = logging.getLogger(__name__)

ISO_RETRIES = 3  # rule 7.4: at least three retransmissions, then resynchronise
# ISO sets no limit on S-requests; without one a card repeating them holds `transceive`
# forever. An honest card lowers IFSC once; a slow command asks WTX for as long as it runs
# (the card in this repository asks every BWT/2 for one BWT more, so 300 s granted is at
# least 150 s of work, ample for any key operation it does).
MAX_IFS_REQUESTS = 4
MAX_WTX_WAIT = 300.0  # seconds granted by S(WTX) per command, summed
MAX_RESPONSE = 65536 + 2  # the largest Ne and the status word


class BlockLink(Protocol):
    def send(self, data: bytes) -> None: ...

    def receive(self, timeout: float) -> bytes | None: ...


@dataclass
class T1Stats:
    blocks_sent: int = 0
    blocks_received: int = 0
    invalid: int = 0  # blocks that failed to decode
    timeouts: int = 0  # BWT expired
    retransmissions: int = 0  # R-blocks sent for errors, and blocks sent again
    wtx: int = 0
    resynchs: int = 0
    apdus: int = 0
    bytes_sent: int = 0  # T=1 blocks, prologue and epilogue included
    bytes_received: int = 0


class T1Terminal:
    def __init__(self, link: BlockLink, *, ifsc: int = DEFAULT_IFSD, edc: Edc = Edc.LRC,
                 bwt: float = 1.7, max_retries: int = ISO_RETRIES, name: str = "T=1",
                 max_wtx_wait: float = MAX_WTX_WAIT, max_ifs_requests: int = MAX_IFS_REQUESTS,
                 max_response: int = MAX_RESPONSE) -> None:
        self.link, self.ifsc, self.edc, self.bwt = link, ifsc, edc, bwt
        self.atr_ifsc = ifsc  # what RESYNCH goes back to (rule 6)
        self.max_retries, self.name = max_retries, name
        self.max_wtx_wait, self.max_ifs_requests = max_wtx_wait, max_ifs_requests
        self.max_response = max_response
        self.ifsd = DEFAULT_IFSD
        self.ns = 0  # our next N(S)
        self.expected = 0  # the card's next N(S)
        self.stats = T1Stats()

    # -- blocks -----------------------------------------------------------------------------

    def _send(self, block: Block) -> None:
        self.stats.blocks_sent += 1
        log.debug("%s -> %s", self.name, block)
        raw = block.encode(self.edc)
        self.stats.bytes_sent += len(raw)
        self.link.send(raw)

    def _receive(self, wait: float) -> Block | RError:
        raw = self.link.receive(wait)
        if raw is None:
            self.stats.timeouts += 1
            return RError.OTHER
        self.stats.blocks_received += 1
        self.stats.bytes_received += len(raw)
        try:
            block = Block.decode(raw, self.edc, self.ifsd)
        except BlockError as exc:
            self.stats.invalid += 1
            log.debug("%s <- invalid block (%s): %s", self.name, exc, raw.hex(" "))
            return exc.error
        log.debug("%s <- %s", self.name, block)
        return block

    # -- S exchanges ------------------------------------------------------------------------

    def _s_exchange(self, kind: SType, inf: bytes = b"") -> Block:
        request = Block.s(kind, False, inf)
        for _attempt in range(self.max_retries + 1):
            self._send(request)
            reply = self._receive(self.bwt)
            if isinstance(reply, Block) and reply.is_s(kind, True) and (
                    kind is not SType.IFS or reply.inf == inf):
                return reply
            self.stats.retransmissions += 1
        raise RetryLimitError(f"{self.name}: no S({kind.name} response) after "
                              f"{self.max_retries + 1} attempts")

    def negotiate_ifsd(self, size: int = MAX_INF) -> int:
        """Tell the card how much INF we take per block (rule 4: S(IFS request))."""
        if not 1 <= size <= MAX_INF:
            raise ValueError(f"IFSD {size}: 1..{MAX_INF}")
        self._s_exchange(SType.IFS, bytes((size,)))
        self.ifsd = size
        return size

    def resynch(self) -> None:
        """S(RESYNCH): both sides back to N(S) = 0, the default IFSD and the ATR's IFSC (rule
        6.3: RESYNCH resets the communication parameters to their initial values)."""
        self.stats.resynchs += 1
        self._s_exchange(SType.RESYNCH)
        self.ns = self.expected = 0
        self.ifsd = DEFAULT_IFSD
        self.ifsc = self.atr_ifsc

    # -- APDUs ------------------------------------------------------------------------------

    def _part(self, apdu: bytes, start: int) -> Block:
        """The I-block carrying apdu[start:], cut at the current IFSC."""
        end = start + self.ifsc
        return Block.i(self.ns, apdu[start:end], more=end < len(apdu))

    def transceive(self, apdu: bytes) -> bytes:
        self.stats.apdus += 1
        start = 0  # where the part in flight begins in apdu
        current = self._part(apdu, start)
        last_sent = current
        receiving = False  # the card's first I-block has come
        response = bytearray()
        response_blocks = 0
        failures, wait = 0, self.bwt
        granted, wtx, ifs_requests = 0.0, 0, 0  # this command's S(WTX) time and count, S(IFS)s
        self._send(current)
        while True:
            reply = self._receive(wait)
            wait = self.bwt
            resend: Block | None = None
            if isinstance(reply, RError):
                resend = last_sent if last_sent.kind is Kind.R else Block.r(self.expected,
                                                                            reply)
            elif reply.kind is Kind.S:
                # A multiplier of 0 would make our wait 0: not a request rule 3 defines, so
                # the block is invalid (rule 7.1) and counts as a failure, not as progress.
                if reply.is_s(SType.WTX, False) and reply.inf[0] > 0:
                    wait = self.bwt * reply.inf[0]
                    if granted + wait > self.max_wtx_wait:
                        self._stalled(f"asked for more time past {self.max_wtx_wait:g} s "
                                      f"of waiting time extensions ({wtx} S(WTX) answered "
                                      f"in this command)")
                    granted += wait
                    wtx += 1
                    self.stats.wtx += 1
                    self._send(Block.s(SType.WTX, True, reply.inf))
                    failures = 0
                    continue
                if reply.is_s(SType.IFS, False) and 1 <= reply.inf[0] <= MAX_INF:
                    ifs_requests += 1
                    if ifs_requests > self.max_ifs_requests:
                        self._stalled(f"sent S(IFS request) {ifs_requests} times in one "
                                      f"command (at most {self.max_ifs_requests})")
                    self.ifsc = reply.inf[0]  # the next part (or a repeat) is cut to fit
                    self._send(Block.s(SType.IFS, True, reply.inf))
                    continue
                if reply.is_s(SType.ABORT, False):
                    self._send(Block.s(SType.ABORT, True))
                    raise LineProtocolError(f"{self.name}: the card aborted the exchange")
                resend = Block.r(self.expected, RError.OTHER)
            elif reply.kind is Kind.R:
                if not receiving and reply.nr == current.ns:
                    if len(current.inf) > self.ifsc:  # the card lowered IFSC meanwhile
                        current = self._part(apdu, start)
                    resend = current  # the card did not get it
                elif not receiving and current.more:
                    start += len(current.inf)  # acknowledged: the next part
                    self.ns ^= 1
                    current = self._part(apdu, start)
                    last_sent = current
                    failures = 0
                    self._send(current)
                    continue
                else:
                    resend = last_sent if last_sent.kind is Kind.R else Block.r(
                        self.expected, RError.OTHER)
            else:  # an I-block from the card
                if current.more and not receiving:
                    resend = Block.r(self.expected, RError.OTHER)  # it must acknowledge first
                elif reply.ns != self.expected:
                    resend = Block.r(self.expected)  # a repeat: ask for the next one
                else:
                    if not receiving:
                        receiving = True
                        self.ns ^= 1  # our last part is acknowledged by the answer
                    self.expected ^= 1
                    response += reply.inf
                    response_blocks += 1
                    if max(len(response), response_blocks) > self.max_response:
                        self._stalled(f"chained a response past {self.max_response} bytes "
                                      f"({len(response)} bytes in {response_blocks} blocks)")
                    failures = 0
                    if not reply.more:
                        return bytes(response)
                    last_sent = Block.r(self.expected)
                    self._send(last_sent)
                    continue
            failures += 1
            if failures > self.max_retries:
                self._give_up(failures)
            self.stats.retransmissions += 1
            last_sent = resend
            self._send(resend)

    def _stalled(self, why: str) -> NoReturn:
        raise CardStalledError(f"{self.name}: the card {why}; stopped waiting. It is still "
                               f"in the command, whose outcome is unknown: reset it")

    def _give_up(self, failures: int) -> None:
        try:
            self.resynch()
        except RetryLimitError as exc:
            raise RetryLimitError(
                f"{self.name}: the card did not answer after {failures} attempts, nor to "
                f"S(RESYNCH); it needs a reset. The command's outcome is unknown") from exc
        raise RetryLimitError(
            f"{self.name}: block exchange failed {failures} times; resynchronised, "
            f"but the command's outcome is unknown (not re-sent: it may have executed)")
