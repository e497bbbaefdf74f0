"""The card manager (card issuer): decrypts its part, authenticates the holder against its
accounts, debits once per order, and answers the seller with a MACed authorisation (as EMV's
ARPC) and the holder with a sealed receipt."""

from __future__ import annotations

from pathlib import Path

from host.codec import Fields
from host.db import AuthorisationRequest, Ledger, Seen
from host.envelope import authorisation_body, context
from host.keymodule import KeyModule
from host.order import Party
from host.server import PartyServer, ServerConfig, request_digest
from host.wire import MessageType, frame


class IssuerServer(PartyServer):
    role = Party.ISSUER.value

    def __init__(self, keys: KeyModule, config: ServerConfig, ledger_path: Path) -> None:
        super().__init__(keys, config)
        self.ledger = Ledger(ledger_path)
        self.handlers[MessageType.AUTHORISE] = self.on_authorise

    async def close(self) -> None:
        await super().close()
        self.ledger.close()

    async def on_authorise(self, body: Fields) -> bytes:
        seller_mac = body.get("mac", bytes, max_size=64)
        header_bytes, box, opened = await self.open_request(body)
        header = opened.header
        # only the seller the holder chose may ask: its MAC covers exactly this request
        request = request_digest(header_bytes, box)
        await self.keys.check_mac(header.seller, request, seller_mac,
                                  context("authorise", header.order_id), "authorisation request")
        decision, seen = self.ledger.authorise(AuthorisationRequest(
            order_id=header.order_id, request_digest=request, seller=header.seller,
            holder=header.holder, digest=opened.digest, atc=opened.atc, fields=opened.fields))
        self.log.info("order %s: %s (%s)%s", header.order_id.hex(), decision.code,
                      decision.reason, " again" if seen is Seen.RETRANSMISSION else "")
        self.crash_point("after-commit")
        auth = authorisation_body(header.order_id, decision.code, decision.reason,
                                  decision.amount, decision.digest)
        mac = await self.keys.mac(header.seller, auth, context("authorisation", header.order_id))
        receipt = await self.receipt(opened, header_bytes, code=decision.code,
                                     reason=decision.reason, amount=decision.amount)
        return frame(MessageType.AUTHORISATION, code=decision.code, reason=decision.reason,
                     amount=decision.amount, digest=decision.digest, mac=mac, receipt=receipt)
