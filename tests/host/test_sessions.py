"""Sessions between the seller and the other parties (docs/protocol.md, "Sessions"): the
handshake confirms both sides in their key modules, every later frame is authenticated, and
the seller keeps its sessions pooled. Each attack is mounted on loopback against the real
servers, bounded in count and time."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from host.errors import ErrorCode, PeerRefused, TransactionError, WireError
from host.parties.admission import Limits
from host.parties.connection import AsyncConnection
from host.parties.keymodule import KeyModule
from host.parties.seller import SellerServer
from host.parties.server import ServerConfig
from host.parties.session import Session, SessionPool
from host.protocol import messages
from host.protocol.messages import (
    SESSION_NONCE,
    Confirm,
    Confirmed,
    ErrorMessage,
    Hello,
    HelloAck,
    HelloDone,
    SessionFrame,
)
from host.protocol.session import Channel, SessionKeys
from host.protocol.wire import LENGTH
from terminal.session import CardSession
from tests.host.market import (
    DELIVERY,
    EVIL,
    HOLDER,
    ISSUER,
    ROGUE_SELLER,
    SELLER,
    Market,
    order,
)
from tests.host.test_transaction import client_for

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
WAIT = 10.0  # seconds: every read in these tests is bounded


def run(coro: Awaitable[T]) -> T:
    """The attacker's side, on its own event loop (the market runs on another)."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


def confirm() -> Confirm:
    """A cheap, genuine request to carry in a session: the holder's confirmation relayed."""
    return Confirm("issuer", HOLDER, secrets.token_bytes(16))


async def refusal_and_close(conn: AsyncConnection, channel: Channel | None = None) -> str:
    """The server's answer to an attack: an `error` (in the session if there is one), then
    the connection closed. Returns the error's code."""
    data = await asyncio.wait_for(conn.receive_frame(), WAIT)
    assert data is not None, "the server closed without saying why"
    message = messages.parse(channel.open(data) if channel is not None else data)
    assert isinstance(message, ErrorMessage), message
    assert await asyncio.wait_for(conn.receive_frame(), WAIT) is None, "connection left open"
    return message.code


async def seller_session(market: Market, keys: KeyModule | None = None) -> Session:
    return await Session.open(keys or market.servers["seller"].keys, LOOPBACK,
                              market.ports["issuer"], ISSUER, "issuer", WAIT)


# -- the handshake ---------------------------------------------------------------------------


def test_a_session_carries_requests_both_ways(market: Market) -> None:
    async def attack() -> None:
        session = await seller_session(market)
        for _ in range(3):
            reply = await session.request(confirm(), Confirmed)
            assert len(reply.response) == 16
        assert session.channel.sent == session.channel.received == 3
        await session.close()

    run(attack())


def test_a_fake_seller_without_the_pair_key_cannot_open_a_session(market: Market) -> None:
    """A genuine seller row under another name (ROGUE_SELLER) claiming to be SELLER: its
    proof is made under the wrong pair key, the card manager's key module refuses it, and
    the request sent after it is never answered."""
    rogue = market.keys(ROGUE_SELLER)

    async def attack() -> str:
        conn = await AsyncConnection.open(LOOPBACK, market.ports["issuer"], WAIT)
        ours = secrets.token_bytes(SESSION_NONCE)
        ack = await conn.request(Hello("issuer", SELLER, ours), HelloAck)
        forged = await rogue.handshake(ISSUER, initiator=True, initiator_nonce=ours,
                                       responder_nonce=ack.nonce)
        await conn.send(HelloDone(forged.proof))
        await conn.send(confirm())  # what it hopes to be served
        code = await refusal_and_close(conn)
        await conn.close()
        return code

    assert run(attack()) == ErrorCode.UNCONFIRMED


def test_a_fake_party_without_the_pair_key_gets_no_order_data(market: Market) -> None:
    """A server at the card manager's address holding another row (EVIL) answers the
    seller's hello: the seller's key module refuses its proof, and nothing but the hello
    (identifier and nonce) ever reaches it."""
    evil = market.keys(EVIL)
    received: list[bytes] = []

    async def fake_party(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = AsyncConnection(reader, writer, WAIT)
        with contextlib.suppress(TransactionError):
            while (data := await conn.receive_frame()) is not None:
                received.append(data)
                message = messages.parse(data)
                if isinstance(message, Hello):
                    ours = secrets.token_bytes(SESSION_NONCE)
                    answer = await evil.handshake(SELLER, initiator=False,
                                                  initiator_nonce=message.nonce,
                                                  responder_nonce=ours)
                    await conn.send(HelloAck(ours, answer.proof))
        await conn.close()

    async def attack() -> TransactionError:
        server = await asyncio.start_server(fake_party, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        pool = SessionPool(market.servers["seller"].keys, LOOPBACK, port, ISSUER, "issuer",
                           timeout=WAIT)
        sent = []

        async def mark_sent() -> None:
            sent.append(1)

        try:
            with pytest.raises(TransactionError) as info:
                await pool.request(confirm(), Confirmed, before_send=mark_sent)
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()
        assert not sent  # the order would not even have been marked as sent
        return info.value

    refused = run(attack())
    assert refused.code is ErrorCode.UNCONFIRMED
    assert [messages.parse(d).TYPE.value for d in received] == ["hello"]


def test_a_request_before_the_handshake_is_refused(market: Market) -> None:
    async def attack() -> str:
        conn = await AsyncConnection.open(LOOPBACK, market.ports["issuer"], WAIT)
        await conn.send(confirm())
        code = await refusal_and_close(conn)
        await conn.close()
        return code

    assert run(attack()) == ErrorCode.NO_SESSION


def test_hello_done_without_hello_is_refused(market: Market) -> None:
    async def attack() -> str:
        conn = await AsyncConnection.open(LOOPBACK, market.ports["delivery"], WAIT)
        await conn.send(HelloDone(bytes(16)))
        code = await refusal_and_close(conn)
        await conn.close()
        return code

    assert run(attack()) == ErrorCode.UNEXPECTED


# -- frames after the handshake --------------------------------------------------------------

Attack = Callable[[Session, Session], Awaitable[bytes]]


def mount(market: Market, attack: Attack) -> str:
    """Open two genuine sessions as the seller, let `attack` build the bytes to send on the
    first (it may use the second), and return the code of the server's refusal."""
    async def go() -> str:
        first, second = await seller_session(market), await seller_session(market)
        try:
            wire = await attack(first, second)
            await first.conn.send_raw(wire)
            return await refusal_and_close(first.conn, first.channel)
        finally:
            await first.close()
            await second.close()

    return run(go())


async def answered(session: Session) -> None:
    assert len((await session.request(confirm(), Confirmed)).response) == 16


def test_a_replayed_frame_is_refused(market: Market) -> None:
    async def attack(session: Session, _other: Session) -> bytes:
        frame = session.channel.seal(confirm().to_frame())
        await session.conn.send_raw(frame)
        session.channel.open(frame_of(await session.conn.receive_frame())[LENGTH.size:])
        return frame  # the same bytes again

    assert mount(market, attack) == ErrorCode.SEQUENCE


def test_a_reordered_frame_is_refused(market: Market) -> None:
    async def attack(session: Session, _other: Session) -> bytes:
        session.channel.seal(confirm().to_frame())  # number 0, held back
        return session.channel.seal(confirm().to_frame())  # number 1, sent first

    assert mount(market, attack) == ErrorCode.SEQUENCE


def test_a_reflected_frame_is_refused(market: Market) -> None:
    """The server's own answer, sent back to it: right number, other direction's key."""
    async def attack(session: Session, _other: Session) -> bytes:
        await session.conn.send_raw(session.channel.seal(confirm().to_frame()))
        data = await session.conn.receive_frame()
        assert data is not None
        session.channel.open(data)
        return LENGTH.pack(len(data)) + data  # its frame number 0 is our next... back at it

    assert mount(market, attack) == ErrorCode.BAD_MAC


def test_a_frame_from_another_session_is_refused(market: Market) -> None:
    """A frame the seller sealed in another session, numbered as this one expects."""
    async def attack(session: Session, other: Session) -> bytes:
        return other.channel.seal(confirm().to_frame())  # number 0 there, as here

    assert mount(market, attack) == ErrorCode.BAD_MAC


def test_a_frame_with_a_flipped_mac_bit_is_refused(market: Market) -> None:
    async def attack(session: Session, _other: Session) -> bytes:
        sealed = messages.parse(session.channel.seal(confirm().to_frame())[LENGTH.size:])
        assert isinstance(sealed, SessionFrame)
        mac = bytes((sealed.mac[0] ^ 0x01,)) + sealed.mac[1:]
        return SessionFrame(sealed.seq, sealed.body, mac).to_frame()

    assert mount(market, attack) == ErrorCode.BAD_MAC


def test_a_frame_with_an_altered_body_is_refused(market: Market) -> None:
    async def attack(session: Session, _other: Session) -> bytes:
        request = confirm()
        frame = session.channel.seal(request.to_frame())
        return frame.replace(request.challenge, bytes(len(request.challenge)))

    assert mount(market, attack) == ErrorCode.BAD_MAC


def test_a_frame_with_a_negative_number_is_refused(market: Market) -> None:
    """A number no MAC can cover (it is 8 unsigned bytes in the MAC): refused as out of
    sequence, not met as an internal error."""
    async def attack(session: Session, _other: Session) -> bytes:
        sealed = messages.parse(session.channel.seal(confirm().to_frame())[LENGTH.size:])
        assert isinstance(sealed, SessionFrame)
        return SessionFrame(-1, sealed.body, sealed.mac).to_frame()

    assert mount(market, attack) == ErrorCode.SEQUENCE


def test_a_plain_frame_after_the_handshake_is_refused(market: Market) -> None:
    async def attack(session: Session, _other: Session) -> bytes:
        await answered(session)
        return confirm().to_frame()

    assert mount(market, attack) == ErrorCode.UNAUTHENTICATED


def test_a_second_hello_in_the_session_is_refused(market: Market) -> None:
    async def attack(session: Session, _other: Session) -> bytes:
        return session.channel.seal(Hello("issuer", SELLER, bytes(32)).to_frame())

    assert mount(market, attack) == ErrorCode.UNEXPECTED


def test_the_seller_refuses_a_replayed_answer(market: Market) -> None:
    """On the seller's side: an on-path relay answers the seller's second request with the
    server's first answer. The seller's session refuses it and closes."""
    upstream_port = market.ports["issuer"]
    answers: list[bytes] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up = await AsyncConnection.open(LOOPBACK, upstream_port, WAIT)
        down = AsyncConnection(reader, writer, WAIT)
        with contextlib.suppress(TransactionError):
            await up.send_raw(frame_of(await down.receive_frame()))  # hello
            await down.send_raw(frame_of(await up.receive_frame()))  # hello-ack
            await up.send_raw(frame_of(await down.receive_frame()))  # hello-done
            while (request := await down.receive_frame()) is not None:
                if answers:  # the second request: answered with the first answer
                    await down.send_raw(answers[0])
                    continue
                await up.send_raw(frame_of(request))
                answers.append(frame_of(await up.receive_frame()))
                await down.send_raw(answers[0])
        await up.close()
        await down.close()

    async def attack() -> TransactionError:
        server = await asyncio.start_server(relay, LOOPBACK, 0)
        session = await Session.open(market.servers["seller"].keys, LOOPBACK,
                                     server.sockets[0].getsockname()[1], ISSUER, "issuer",
                                     WAIT)
        try:
            await answered(session)
            with pytest.raises(WireError) as info:
                await session.request(confirm(), Confirmed)
        finally:
            await session.close()
            server.close()
            await server.wait_closed()
        return info.value

    assert run(attack()).code is ErrorCode.SEQUENCE


def frame_of(data: bytes | None) -> bytes:
    assert data is not None
    return LENGTH.pack(len(data)) + data


# -- the pure channel, both roles ------------------------------------------------------------


def channels() -> tuple[Channel, Channel]:
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    return (Channel(SessionKeys(a, b), initiator=True),
            Channel(SessionKeys(b, a), initiator=False))


@pytest.mark.parametrize("initiator_sends", [True, False])
def test_a_channel_refuses_replay_reflection_and_plain_frames(initiator_sends: bool) -> None:
    sender, receiver = channels() if initiator_sends else channels()[::-1]
    first = sender.seal(Confirmed(bytes(16)).to_frame())
    assert receiver.open(first[LENGTH.size:]) == Confirmed(bytes(16)).to_frame()[LENGTH.size:]
    for wire, code in ((first, ErrorCode.SEQUENCE),
                       (receiver.seal(Confirmed(bytes(16)).to_frame()), ErrorCode.BAD_MAC),
                       (Confirmed(bytes(16)).to_frame(), ErrorCode.UNAUTHENTICATED)):
        with pytest.raises(WireError) as info:
            receiver.open(wire[LENGTH.size:])
        assert info.value.code is code


# -- the pool ---------------------------------------------------------------------------------


def pools(market: Market) -> dict[str, SessionPool]:
    seller = market.servers["seller"]
    assert isinstance(seller, SellerServer)
    return {party.value: pool for party, pool in seller.pools.items()}


def test_orders_reuse_the_sellers_sessions(market: Market, holder_card: CardSession) -> None:
    """Three purchases (with their relayed confirmations): one handshake per party."""
    for _ in range(3):
        assert client_for(market, holder_card).buy(order()).approved
    assert {name: pool.opened for name, pool in pools(market).items()} == \
        {"issuer": 1, "delivery": 1}


def test_a_session_closed_by_the_servers_idle_timeout_is_replaced(
        make_market: Callable[..., Market], holder_card: CardSession) -> None:
    """The card manager and the delivery company drop idle sessions after 0.3 s, silently;
    the seller's pool (which would keep them 5 s) notices and opens new ones."""
    m = make_market(issuer_config=ServerConfig(idle_timeout=0.3))
    assert client_for(m, holder_card).buy(order()).approved
    run(asyncio.sleep(0.6))
    assert client_for(m, holder_card).buy(order()).approved
    assert pools(m)["issuer"].opened == 2


def test_a_shed_session_is_replaced(make_market: Callable[..., Market],
                                    holder_card: CardSession) -> None:
    """A card manager whose table holds one connection sheds the seller's idle session for a
    newcomer; the seller's next order opens a new session."""
    m = make_market(issuer_config=ServerConfig(limits=Limits(max_connections=1,
                                                             shed_after=0.1)))
    assert client_for(m, holder_card).buy(order()).approved

    async def newcomer() -> None:
        await asyncio.sleep(0.2)
        conn = await AsyncConnection.open(LOOPBACK, m.ports["issuer"], WAIT)
        await asyncio.sleep(0.2)  # admitted: the pooled session was shed for it
        await conn.close()
        await asyncio.sleep(0.2)

    run(newcomer())
    assert client_for(m, holder_card).buy(order()).approved
    assert pools(m)["issuer"].opened == 2


def test_a_peer_refusal_in_the_session_keeps_the_connection(market: Market) -> None:
    """An `error` answered in the session is the party's word: the session stays usable."""
    async def go() -> None:
        pool = SessionPool(market.servers["seller"].keys, LOOPBACK, market.ports["delivery"],
                           DELIVERY, "delivery", timeout=WAIT)
        try:
            with pytest.raises(PeerRefused) as info:
                await pool.request(Confirm("issuer", HOLDER, bytes(16)), Confirmed)
            assert info.value.code is ErrorCode.WRONG_PARTY
            await pool.request(Confirm("delivery", HOLDER, bytes(16)), Confirmed)
            assert pool.opened == 1
        finally:
            await pool.close()

    run(go())
