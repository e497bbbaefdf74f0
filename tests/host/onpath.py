"""An on-path attacker between the holder's terminal and the seller, on loopback: it relays
every frame and may rewrite the seller's answers, answer some requests itself, and keeps
what it saw. One thread, one connection at a time, bounded by its timeouts; `close` stops it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

from host.parties.connection import Connection
from host.protocol import codec
from host.protocol.wire import FrameDecoder, MessageType, RawMessage, frame

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]
# a request the attacker answers itself instead of relaying: returns the answer, or None
Answer = Callable[[dict[str, Any]], dict[str, Any] | None]


class OnPathProxy:
    def __init__(self, upstream_port: int, *, rewrite: Rewrite | None = None,
                 answer: Answer | None = None, timeout: float = 20.0) -> None:
        self.upstream_port = upstream_port
        self.rewrite = rewrite or (lambda reply: reply)
        self.answer = answer or (lambda _request: None)
        self.timeout = timeout
        self.requests: list[dict[str, Any]] = []  # what the holder sent through us
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def types(self) -> list[str]:
        return [r["type"] for r in self.requests]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with client, contextlib.closing(Connection("127.0.0.1", self.upstream_port,
                                                       timeout=self.timeout)) as upstream:
                self._relay(client, upstream)

    def _from_holder(self, client: socket.socket, decoder: FrameDecoder,
                     pending: list[bytes]) -> dict[str, Any] | None:
        client.settimeout(self.timeout)
        while not pending:
            try:
                data = client.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            pending.extend(decoder.feed(data))
        return dict(RawMessage.parse(pending.pop(0)).body.map)

    def _relay(self, client: socket.socket, upstream: Connection) -> None:
        decoder, pending = FrameDecoder(), []
        while not self._stop.is_set():
            request = self._from_holder(client, decoder, pending)
            if request is None:
                return  # the holder went away
            self.requests.append(request)
            ours = self.answer(request)
            if ours is None:
                body = {k: v for k, v in request.items() if k != "type"}
                upstream.send_raw(frame(MessageType(request["type"]), **body))
                try:
                    answer = upstream.receive()
                    ours = self.rewrite({"type": answer.TYPE.value, **answer.to_cbor()})
                except Exception:
                    return
            body = {k: v for k, v in ours.items() if k != "type"}
            client.sendall(frame(MessageType(ours["type"]), **body))

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=5)


def edit_form(reply: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The seller's `form` answer with its form bytes decoded, changed and re-encoded; the
    seller's MAC is kept (the attacker cannot make another)."""
    if reply.get("type") != "form":
        return reply
    form = codec.decode(reply["form"])
    change(form)
    return {**reply, "form": codec.encode(form)}
