"""APDU trace: one log line per command and per response, at TRAFFIC level (below DEBUG), and
optionally every exchange recorded in a pcap (terminal/pcap.py) as it crossed the reader.

Secrets never reach the log or the recording unless the user asks for them (`show_secrets`,
the CLI's `--trace-secrets`, which then shows them whole, not elided): the data of every
command that carries a PIN, a key, a row or order plaintext is replaced by its length in the
log and by zero bytes in the pcap, in both directions, including the GET RESPONSE commands
that fetch the rest of a secret answer. Which commands those are is the card vocabulary's
table (`Ins.secret`, card_applet/vocabulary.py), followed exchange by exchange by
card_applet/secrecy.py as the card's own trace does. Data longer than 64 bytes is elided in the log
unless `show_full` (`--trace-full`); the pcap always holds all of it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from card_applet.apdu import CommandApdu, ResponseApdu
from card_applet.apdu_trace import (
    TRAFFIC,
    ExchangeSink,
    TraceStyle,
    format_command,
    format_response,
)
from card_applet.durable import open_private
from card_applet.secrecy import Secrecy

__all__ = ["TRAFFIC", "log", "open_trace_file", "record", "recording", "show_full", "show_secrets",
           "style", "trace_command", "trace_response"]

log = logging.getLogger("nettx.apdu")


@dataclass
class _Channel:
    secrecy: Secrecy = field(default_factory=Secrecy)
    command: CommandApdu | None = None
    command_secret: bool = False
    epoch: int = 0  # the `_epoch` its secrecy has followed since


_style = TraceStyle()
_sink: ExchangeSink | None = None
_channels: dict[str, _Channel] = {}  # by reader name: a reader's secrecy is not another's
_lock = threading.Lock()
# Nothing logged and nothing recorded: an exchange costs the trace one level check and no
# secrecy bookkeeping. Each stretch of exchanges gone by untraced starts a new epoch, and a
# channel (a reader) from an earlier epoch has lost track of what a 61xx left pending: its
# secrecy then assumes the worst until the card says again (Secrecy.lose_track), so turning
# a trace on in the middle of a response chain never shows the rest of a secret.
_untraced = False
_epoch = 0


def _idle() -> bool:
    return _sink is None and not log.isEnabledFor(TRAFFIC)


def _channel(reader: str) -> _Channel:
    """The reader's channel, its secrecy brought up to the current epoch (under _lock)."""
    global _untraced, _epoch
    if _untraced:
        _untraced = False
        _epoch += 1
    channel = _channels.get(reader)
    if channel is None:
        channel = _channels[reader] = _Channel()
    if channel.epoch != _epoch:
        channel.secrecy.lose_track()
        channel.command, channel.epoch = None, _epoch
    return channel


def show_secrets(enabled: bool) -> None:
    """Trace secret data as any other (a debugging aid the user asks for explicitly)."""
    global _style
    _style = TraceStyle(secrets=enabled, full=_style.full)


def show_full(enabled: bool) -> None:
    """Log all of every command's and response's data, not its first 64 bytes."""
    global _style
    _style = TraceStyle(secrets=_style.secrets, full=enabled)


def style() -> TraceStyle:
    return _style


def record(sink: ExchangeSink | None) -> None:
    """Record every exchange from now on in `sink` (None: stop recording)."""
    global _sink
    with _lock:
        _sink = sink


def recording() -> ExchangeSink | None:
    """Where exchanges are being recorded, if anywhere."""
    return _sink


def trace_command(reader: str, cmd: CommandApdu) -> None:
    global _untraced
    if _idle():
        _untraced = True
        return
    with _lock:
        channel = _channel(reader)
        secret = channel.secrecy.command(cmd)
        channel.command, channel.command_secret = cmd, secret
    if log.isEnabledFor(TRAFFIC):
        log.log(TRAFFIC, "%s SEND %s", reader, format_command(cmd, secret, _style))


def trace_response(reader: str, resp: ResponseApdu) -> None:
    global _sink, _untraced
    if _idle():
        _untraced = True
        return
    with _lock:
        channel = _channel(reader)
        redaction = channel.secrecy.response(resp)
        cmd, channel.command = channel.command, None
        if _sink is not None and cmd is not None:
            shows = _style.secrets
            try:
                _sink.write(cmd, resp, hide_command=redaction.command and not shows,
                            hide_response=redaction.response and not shows)
            except OSError as exc:  # a full disk stops the recording, not the session
                logging.getLogger("nettx").warning("APDU recording stopped: %s", exc)
                _sink = None
    if log.isEnabledFor(TRAFFIC):
        log.log(TRAFFIC, "%s RECV %s", reader, format_response(resp, redaction.response, _style))


def open_trace_file(path: Path) -> TextIO:
    """The trace file, opened for appending: created 0600, refused if `path` is a symbolic link,
    tightened to 0600 if others could read it (a trace shows who talked to which card, and
    with --trace-secrets the secrets). OSError if it cannot be."""
    fd = open_private(path, os.O_APPEND)
    try:
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)  # line-buffered: tail -f
    except BaseException:
        os.close(fd)
        raise
