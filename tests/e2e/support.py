"""End-to-end helpers: the test card's secrets, and card processes on the embedded reader
that are stopped by PID whatever the test does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from terminal.cardproc import CardProcess
from terminal.embedded import EmbeddedReader

HOLDER = "holder:alice@example.org"
SELLER = "seller:shop.example"
PIN, PUK = "1234", "12345678"
WRONG_PIN = "9999"
CONNECT_TIMEOUT = 15.0


@contextlib.contextmanager
def card_on_embedded_reader(state: Path, extra: list[str] | None = None,
                            log_path: Path | None = None,
                            ) -> Iterator[tuple[EmbeddedReader, CardProcess]]:
    """An embedded reader on a free port and a card process connected to it; the reader
    is closed and the process stopped on the way out, failure or not."""
    reader = EmbeddedReader("127.0.0.1", 0)
    try:
        card = CardProcess(state, "127.0.0.1", reader.port, extra=extra, log_path=log_path)
        try:
            reader.wait_for_card(timeout=CONNECT_TIMEOUT)
            yield reader, card
        finally:
            card.stop()
    finally:
        reader.close()
