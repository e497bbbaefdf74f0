"""Where `nettx`'s APDU traces go: `--trace-file` (the text trace, appended to a file instead
of stderr), `--trace-full` (all of the data), `--trace-pcap` (every exchange in a pcap that
Wireshark decodes), and the card's own trace for `card serve`.

The files are opened once, when the command starts (a bad path is one error line before any
APDU), and closed when it ends; both are created 0600 and refused when the path is a
symbolic link (one planted there would send the trace elsewhere). The text trace is appended
to, so one file can collect several commands (each line is timestamped); a pcap is one
capture and is replaced.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import click

from card_applet.apdu_trace import TRAFFIC, CardTrace, card_log
from host.cli.kit import CliFail
from terminal import trace
from terminal.pcap import PcapWriter

# the terminal's trace and the card's (card serve): both go to --trace-file
APDU_LOGGERS = (trace.log, card_log)
LINE_FORMAT = "%(asctime)s %(name)s %(message)s"


def _cannot_open(option: str, path: Path, exc: OSError) -> CliFail:
    if exc.errno == errno.ELOOP:
        return CliFail(f"{option} {path}: a symbolic link (a trace is never written through "
                       "one: give the file's own path)")
    return CliFail(f"{option} {path}: {exc.strerror or exc}")


def trace_to_file(ctx: click.Context, path: Path) -> None:
    """Send the APDU trace (terminal and card) to `path` instead of stderr, at TRAFFIC level
    whatever the other logs' level, until the command ends."""
    try:
        stream = trace.open_trace_file(path)
    except OSError as exc:
        raise _cannot_open("--trace-file", path, exc) from exc
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    before = [(logger, logger.level, logger.propagate) for logger in APDU_LOGGERS]
    for logger in APDU_LOGGERS:
        logger.addHandler(handler)
        logger.setLevel(TRAFFIC)
        logger.propagate = False  # not to stderr as well

    def stop() -> None:
        for logger, level, propagate in before:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
        handler.close()
        stream.close()

    ctx.call_on_close(stop)


def open_pcap(ctx: click.Context, path: Path, option: str = "--trace-pcap") -> PcapWriter:
    """A pcap writer on `path`, closed when the command ends."""
    try:
        writer = PcapWriter(path)
    except OSError as exc:
        raise _cannot_open(option, path, exc) from exc
    ctx.call_on_close(writer.close)
    return writer


def record_to_pcap(ctx: click.Context, path: Path) -> None:
    """Record every exchange of this command's card sessions in a pcap at `path`."""
    trace.record(open_pcap(ctx, path))
    ctx.call_on_close(lambda: trace.record(None))


def start(ctx: click.Context, *, full: bool, file: Path | None, pcap: Path | None) -> None:
    """The top-level options: `--trace-full`, `--trace-file`, `--trace-pcap`."""
    trace.show_full(full)
    if file is not None:
        trace_to_file(ctx, file)
    if pcap is not None:
        record_to_pcap(ctx, pcap)


def card_trace(ctx: click.Context, *, log: bool, pcap: Path | None) -> CardTrace | None:
    """What `card serve` traces: with `log` (its --trace), each exchange in the log; with
    `pcap` (its --trace-pcap), in that pcap. The top-level --trace, --trace-file and
    --trace-pcap apply too: the card is the only thing `card serve` talks to. None: no trace
    asked for at all."""
    if log and not card_log.isEnabledFor(TRAFFIC):
        level = card_log.level
        card_log.setLevel(TRAFFIC)
        ctx.call_on_close(lambda: card_log.setLevel(level))
    if pcap is not None and trace.recording() is not None:
        raise click.UsageError("--trace-pcap given twice: before and after `card serve`")
    sink = open_pcap(ctx, pcap) if pcap is not None else trace.recording()
    if sink is None and not card_log.isEnabledFor(TRAFFIC):
        return None
    return CardTrace(trace.style(), sink)
