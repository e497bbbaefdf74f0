"""Opening a card for a host command: through a named reader, or (the default) through
the embedded reader with a card process this command starts and stops itself."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from terminal.cardproc import CardProcess
from terminal.embedded import EmbeddedReader
from terminal.errors import NoCardError, ReaderError
from terminal.reader import Reader
from terminal.readers import open_reader

CONNECT_TIMEOUT = 15.0


@contextlib.contextmanager
def open_card(reader_spec: str | None, state: Path | None,
              log_path: Path | None = None) -> Iterator[Reader]:
    if reader_spec is not None:
        reader = open_reader(reader_spec)
        try:
            if isinstance(reader, EmbeddedReader):
                reader.wait_for_card()
            yield reader
        finally:
            reader.close()
        return
    if state is None:
        raise ReaderError("give --reader, or --state FILE to start a card on the embedded reader")
    if not state.exists():
        raise ReaderError(f"no card state at {state} (make one with `nettx card new`)")
    reader = EmbeddedReader("127.0.0.1", 0)
    card = CardProcess(state, "127.0.0.1", reader.port, log_path=log_path)
    try:
        # wait in short steps: a card process that died at start (an unreadable state
        # file) is reported at once, not after the whole timeout
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            try:
                reader.wait_for_card(timeout=0.1)
                break
            except NoCardError as exc:
                if card.alive() and time.monotonic() < deadline:
                    continue
                raise ReaderError(f"the card process for {state} did not connect "
                                  f"(exit status {card.proc.poll()})") from exc
        yield reader
    finally:
        with contextlib.suppress(ReaderError, OSError):
            reader.power_off()
        reader.close()
        card.stop()
