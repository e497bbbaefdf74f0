"""Opening a card for a host command: through a named reader, or (the default) through
the embedded reader with a card process this command starts and stops itself.

The card process it starts gets one end of a socketpair (inherited, `--vpcd-fd`) and this
process keeps the other: no socket listens, so no other local process can pose as the card
and receive the PIN or the order's parts. A sealed state's key goes to the child on a pipe.

The state key options (`state_key_options`: --state-key-file PATH, --state-key-fd N) belong
to every command that takes --state; the key never travels on the command line.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from card_applet.store_errors import StateError
from terminal.errors import ReaderError
from terminal.reader import Reader

# The readers, the card process and the state key's cipher load when a card is opened, not
# when a command that takes these options is defined: every command module imports this one,
# and `nettx authority issue` (say) must not pay for what only talking to a card needs.
if TYPE_CHECKING:
    from card_applet.sealing import StateKey
    from terminal.cardproc import CardProcess
    from terminal.embedded import EmbeddedReader

CONNECT_TIMEOUT = 15.0
STATE_KEY_META = "nettx.state_key"


# -- the state key on the command line ---------------------------------------------------------


def _load_key(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None:
        return
    if STATE_KEY_META in ctx.meta:
        raise click.UsageError("give the state key once: --state-key-file or --state-key-fd")
    from card_applet.sealing import StateKey

    try:
        key = StateKey.from_file(value) if param.name == "state_key_file" else \
            StateKey.from_fd(value)
    except StateError as exc:
        raise click.BadParameter(str(exc)) from exc
    ctx.meta[STATE_KEY_META] = key


def state_key_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--state-key-file / --state-key-fd: the key of a sealed card state (sealing.py). The
    loaded key is kept in click's context; `open_card` and `current_state_key` find it."""
    fn = click.option("--state-key-fd", type=int, metavar="N", expose_value=False,
                      callback=_load_key,
                      help="Read the card state's key from file descriptor N (to its end).")(fn)
    fn = click.option("--state-key-file", type=click.Path(dir_okay=False, path_type=Path),
                      metavar="PATH", expose_value=False, callback=_load_key,
                      help="Read the card state's key from PATH (the state file is sealed "
                           "with it: AES-256-GCM at rest).")(fn)
    return fn


def current_state_key() -> StateKey | None:
    """The key given to the running `nettx` command, if any."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    key = ctx.meta.get(STATE_KEY_META)
    from card_applet.sealing import StateKey

    return key if isinstance(key, StateKey) else None


# -- the card ---------------------------------------------------------------------------------


class _FromCli:
    """Sentinel: take the key from the running command's options."""


FROM_CLI = _FromCli()


@contextlib.contextmanager
def open_card(reader_spec: str | None, state: Path | None,
              log_path: Path | None = None,
              key: StateKey | _FromCli | None = FROM_CLI) -> Iterator[Reader]:
    from terminal.cardproc import CardProcess
    from terminal.embedded import EmbeddedReader
    from terminal.readers import open_reader

    state_key = current_state_key() if isinstance(key, _FromCli) else key
    if reader_spec is not None:
        try:
            reader = open_reader(reader_spec, state_key=state_key)
        except StateError as exc:
            raise ReaderError(str(exc)) from exc
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
    ours, theirs = socket.socketpair()
    try:
        card = CardProcess(state, "", 0, log_path=log_path, channel=theirs, key=state_key)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # the child has its copy; ours must go, or EOF never reaches it
    reader = EmbeddedReader.over(ours, name=f"card process for {state.name}")
    try:
        _first_power_on(reader, card, state)
        yield reader
    finally:
        with contextlib.suppress(ReaderError, OSError):
            reader.power_off()
        reader.close()
        card.stop()


def _first_power_on(reader: EmbeddedReader, card: CardProcess, state: Path) -> None:
    """The card's first answer (its ATR) proves it started: a process that could not open
    its state (locked, sealed, unreadable) is reported with its own reason, at once."""
    steady, reader.response_timeout = reader.response_timeout, CONNECT_TIMEOUT
    try:
        reader.power_on()
    except ReaderError as exc:
        status = card.wait_exit(5.0)
        reason = card.last_words() or (f"exit status {status}" if status is not None
                                       else f"no answer in {CONNECT_TIMEOUT:g} s")
        raise ReaderError(f"the card process for {state} did not start: {reason}") from exc
    finally:
        reader.response_timeout = steady
