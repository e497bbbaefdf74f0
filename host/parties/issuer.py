"""The card manager (card issuer): decrypts its part, authenticates the holder against its
accounts, debits once per order, and answers the seller with a MACed authorisation (as EMV's
ARPC) and the holder with a sealed receipt. An order the seller cannot complete is reversed
(or voided, if it never arrived), on a request MACed by that seller.

A decline tells the seller (and the wire) one thing, `declined`: which check failed (an
unknown card number, one of another holder, a wrong expiry...) would make the seller an oracle
for card numbers. The precise reason goes only into the receipt sealed for the holder's card,
padded so its length does not tell either. The decision itself is the card manager's rules
(host.parties.authorisation), applied by the ledger in the transaction that debits; declines
per holder are rate-limited there.

Every answer is recorded before it is sent, and a retransmission gets those exact bytes back:
a decision has one MAC, whatever the retries.
"""

from __future__ import annotations

from pathlib import Path

from host.parties.authorisation import decide
from host.parties.durability import crash_in_batch
from host.parties.keymodule import KeyModule
from host.parties.server import PartyServer, ServerConfig, our_header, staleness
from host.protocol import codec
from host.protocol.envelope import (
    OpenedPart,
    authorisation_body,
    context,
    reverse_body,
    reversed_body,
)
from host.protocol.messages import Authorisation, Authorise, Reverse, Reversed
from host.protocol.order import Party
from host.protocol.parts import IssuerPart
from host.protocol.wire import MessageType
from host.storage.base import Seen
from host.storage.engine import open_ledger
from host.storage.ledger import AuthorisationRequest, LedgerStore

#: the only decline reason the seller and the wire see
DECLINED = "declined by the card manager"
#: an authorisation receipt's plaintext is padded to a multiple of this many bytes
RECEIPT_BLOCK = 256


def padded(content: dict[str, object]) -> dict[str, object]:
    """`content` with a `pad` byte string that brings its encoding to a multiple of
    RECEIPT_BLOCK: the sealed receipt's length says nothing about the reason in it."""
    bare = len(codec.encode({**content, "pad": b""}))
    target = -(-bare // RECEIPT_BLOCK) * RECEIPT_BLOCK
    while True:
        for prefix_growth in (0, 1, 2):  # a longer pad may need a longer length prefix
            n = target - bare - prefix_growth
            candidate = {**content, "pad": bytes(max(n, 0))}
            if n >= 0 and len(codec.encode(candidate)) == target:
                return candidate
        target += RECEIPT_BLOCK  # no pad length lands exactly: use the next block


def authorisation_request(opened: OpenedPart[IssuerPart],
                          request_digest: bytes) -> AuthorisationRequest:
    """The card manager's part as the plain values its rules read (None where the part lacks
    a field or carries it with the wrong type: the rules decline the request)."""
    header, part = opened.header, opened.part
    return AuthorisationRequest(
        order_id=header.order_id, request_digest=request_digest, seller=header.seller,
        holder=header.holder, digest=opened.digest, atc=opened.atc,
        card_number=part.card_number, amount=part.amount, expiry=part.card_expiry,
        name=part.holder_name, phone=part.holder_phone, fields=part.names)


class IssuerServer(PartyServer):
    role = Party.ISSUER.value
    sessions = True  # the seller opens a session first (docs/protocol.md, "Sessions")

    def __init__(self, keys: KeyModule, config: ServerConfig, ledger_path: Path) -> None:
        super().__init__(keys, config)
        self.ledger: LedgerStore = open_ledger(
            ledger_path, batch_hook=crash_in_batch(config.crash_at, self.crash_point))
        self.handlers[MessageType.AUTHORISE] = self.on_authorise
        self.handlers[MessageType.REVERSE] = self.on_reverse

    async def close(self) -> None:
        await super().close()
        self.ledger.close()

    async def on_authorise(self, message: Authorise) -> bytes:
        request, opened = await self.open_request(message, "authorise", IssuerPart.read)
        header = opened.header
        decision, seen = await self.ledger.authorise(
            authorisation_request(opened, request), decide,
            stale=staleness(header, self.config.window))
        self.log.info("order %s: %s (%s)%s", header.order_id.hex(), decision.code,
                      decision.reason, " again" if seen is Seen.RETRANSMISSION else "")
        self.crash_point("after-commit")
        if decision.answer is not None:
            # a retransmission: the very bytes sent before (a fresh MAC would differ, and the
            # seller's delivery request covers the MAC it holds)
            return decision.answer
        said = decision.reason if decision.approved else DECLINED
        auth = authorisation_body(header.order_id, decision.code, said, decision.amount,
                                  decision.digest)
        mac = await self.keys.mac(header.seller, auth, context("authorisation", header.order_id))
        receipt = await self.receipt(header, opened.header_bytes, **padded({
            "digest": decision.digest, "code": decision.code, "reason": decision.reason,
            "amount": decision.amount}))
        # recorded before it is sent: whatever reaches the seller is what it will get again
        return await self.ledger.record_answer(header.order_id, Authorisation(
            decision.code, said, decision.amount, decision.digest, mac, receipt).to_frame())

    async def on_reverse(self, message: Reverse) -> bytes:
        header, digest, reason = our_header(self.keys, Party.ISSUER, message.header), \
            message.digest, message.reason
        await self.keys.check_mac(header.seller, reverse_body(header.order_id, digest, reason),
                                  message.mac, context("reverse", header.order_id),
                                  "reversal request")
        decision = await self.ledger.reverse(header.order_id, header.seller, digest)
        self.log.info("order %s: %s at the seller's request (%s)", header.order_id.hex(),
                      decision.code, reason)
        if decision.answer is not None:
            return decision.answer
        mac = await self.keys.mac(header.seller, reversed_body(header.order_id, decision.code,
                                                               decision.amount, digest),
                                  context("reversed", header.order_id))
        receipt = await self.receipt(header, message.header, digest, code=decision.code,
                                     reason=reason, amount=decision.amount)
        return await self.ledger.record_reversal(header.order_id, Reversed(
            decision.code, decision.amount, mac, receipt).to_frame())
