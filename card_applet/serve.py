"""The card process: one applet over its EEPROM file, served to a vpcd reader.

    python -m card_applet.serve --state card.json [--vpcd 127.0.0.1:35963]
    python -m card_applet.serve --state card.json --serial /dev/pts/7   (ISO 7816-3 T=1)
    python -m card_applet.serve --state card.json --serial /dev/pts/7 --protocol t0
    python -m card_applet.serve --state card.json --vpcd-fd 3           (inherited socket)

(`nettx card serve` is the same, plus manufacturing a blank card when the file is new.)
--trace logs every command the card receives and its answer, at TRAFFIC level, with secrets
redacted as the terminal's trace redacts them (card_applet/apdu_trace.py).
--vpcd-fd serves one already connected vpcd channel (a socketpair end handed over by the
terminal that started this process) and ends when it closes: nothing listens, nothing else
can connect. A sealed state needs its key, from --state-key-file PATH or --state-key-fd N
(never on the command line). A card state is served by one process at a time (its .lock).
SIGTERM and SIGINT stop it cleanly; every state change is already on disk by then.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import socket
import sys
import threading
from pathlib import Path

from card_applet.apdu_trace import TRAFFIC, CardTrace, TracedCard, TraceStyle, card_log
from card_applet.applet import Applet
from card_applet.atr import ATR, ATR_CRC, ATR_DUAL, ATR_DUAL_CRC, ATR_T0
from card_applet.sealing import StateKey
from card_applet.state import CardStore, FileStore, TearingStore
from card_applet.store_errors import StateError
from card_applet.vpcd import DEFAULT_PORT, Card, CardSide, VpcdCard

log = logging.getLogger("nettx.card")

MAX_DELAY = 600.0  # s: a test facility; longer is a typo, not a test
# --protocol on a serial line: what the ATR offers (docs/serial.md), without and with --crc
SERIAL_PROTOCOLS = ("t1", "both", "t0")
_SERIAL_ATRS = {"t1": (ATR, ATR_CRC), "both": (ATR_DUAL, ATR_DUAL_CRC), "t0": (ATR_T0, None)}


def serial_atr(protocol: str = "t1", crc: bool = False) -> bytes:
    """The ATR for --protocol: t1 (T=1 only), both (T=0 by default, T=1 by PPS), t0 (T=0
    only). --crc is a T=1 epilogue: ValueError with t0."""
    if protocol not in _SERIAL_ATRS:
        raise ValueError(f"bad --protocol {protocol!r}: one of {', '.join(SERIAL_PROTOCOLS)}")
    atr = _SERIAL_ATRS[protocol][1 if crc else 0]
    if atr is None:
        raise ValueError("--crc names a T=1 epilogue: it cannot go with --protocol t0")
    return atr


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad HOST:PORT {text!r}")
    return host or "127.0.0.1", int(port)


def open_applet(state_path: Path, key: StateKey | None = None,
                tear_after_writes: int | None = None) -> Applet:
    """The applet over its EEPROM file: takes the card's lock and unseals the state
    (StateError if either fails)."""
    file_store = FileStore(state_path, key)
    store: CardStore = file_store
    if tear_after_writes is not None:
        store = TearingStore(file_store, tear_after_writes)
    return Applet(store)


def traced(applet: Applet, trace: CardTrace | None) -> Card:
    """The applet as served: itself, or wrapped so each exchange is traced."""
    if trace is None:
        return applet
    return TracedCard(applet, f"card {applet.state.serial.hex()}", trace)


def serve(state_path: Path, host: str, port: int, *, tear_after_writes: int | None = None,
          stop: threading.Event | None = None, listen: bool = False,
          key: StateKey | None = None, channel: socket.socket | None = None,
          trace: CardTrace | None = None) -> None:
    applet = open_applet(state_path, key, tear_after_writes)
    card = VpcdCard(CardSide(traced(applet, trace)), host, port, stop=stop or threading.Event(),
                    listen=listen, channel=channel)
    log.info("card %s (%s) %s vpcd %s", applet.state.serial.hex(),
             applet.state.lifecycle.name.lower(), "waiting for" if listen else "serving to",
             card.where)
    card.run()


def serve_serial(state_path: Path, device: str, *, stop: threading.Event | None = None,
                 tear_after_writes: int | None = None,
                 delays: dict[int, float] | None = None, crc: bool = False,
                 key: StateKey | None = None, trace: CardTrace | None = None,
                 protocol: str = "t1") -> None:
    """Serve the card on a serial line (a UART, a pty, or any pyserial URL) until `stop`;
    `crc`: the ATR announces a CRC epilogue for T=1 blocks instead of the LRC; `protocol`:
    what the ATR offers (`serial_atr`)."""
    atr = serial_atr(protocol, crc)
    import serial  # pyserial only for the serial card

    from card_applet.line import serial_options
    from card_applet.serial_card import SerialCard

    applet = open_applet(state_path, key, tear_after_writes)
    slow = dict(delays or {})
    port = serial.serial_for_url(device, timeout=0.01, **serial_options(device))
    log.info("card %s (%s) on serial line %s", applet.state.serial.hex(),
             applet.state.lifecycle.name.lower(), device)
    try:
        SerialCard(traced(applet, trace), port, stop or threading.Event(),
                   atr=atr,
                   command_delay=lambda apdu: slow.get(apdu[1], 0.0) if len(apdu) > 1 else 0.0,
                   ).run()
    finally:
        port.close()


def parse_delays(specs: list[str]) -> dict[int, float]:
    """`INS:SECONDS` pairs (hex INS): the test facility that makes commands slow. SECONDS is
    checked here: a negative, infinite or NaN delay would only fail later, in the worker
    thread's time.sleep, or make a command that never answers."""
    delays = {}
    for spec in specs:
        ins, sep, seconds = spec.partition(":")
        try:
            code, delay = int(ins, 16), float(seconds)
        except ValueError:
            raise ValueError(f"bad --delay {spec!r}: want INS:SECONDS, e.g. 2A:3.5") from None
        if not sep or not 0 <= code <= 0xFF:
            raise ValueError(f"bad --delay {spec!r}: want INS:SECONDS, e.g. 2A:3.5")
        if not (math.isfinite(delay) and 0 <= delay <= MAX_DELAY):
            raise ValueError(f"bad --delay {spec!r}: SECONDS must be from 0 to {MAX_DELAY:g}")
        delays[code] = delay
    return delays


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def serve_until_signalled(state_path: Path, host: str, port: int, *, listen: bool = False,
                          tear_after_writes: int | None = None, key: StateKey | None = None,
                          channel: socket.socket | None = None,
                          trace: CardTrace | None = None) -> None:
    """`serve` until SIGTERM or SIGINT; every state change is already on disk by then."""
    serve(state_path, host, port, tear_after_writes=tear_after_writes, stop=_stop_on_signals(),
          listen=listen, key=key, channel=channel, trace=trace)


def serve_serial_until_signalled(state_path: Path, device: str, *,
                                 tear_after_writes: int | None = None,
                                 delays: dict[int, float] | None = None,
                                 crc: bool = False, key: StateKey | None = None,
                                 trace: CardTrace | None = None, protocol: str = "t1") -> None:
    serve_serial(state_path, device, stop=_stop_on_signals(),
                 tear_after_writes=tear_after_writes, delays=delays, crc=crc, key=key,
                 trace=trace, protocol=protocol)


def inherited_channel(fd: int) -> socket.socket:
    """The vpcd channel the parent handed over as file descriptor `fd` (a connected
    stream socket; anything else is refused)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ValueError(f"--vpcd-fd {fd}: not an open socket ({exc.strerror or exc})") from exc
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ValueError(f"--vpcd-fd {fd}: not a stream socket")
    return sock


def read_state_key(key_file: Path | None, key_fd: int | None) -> StateKey | None:
    if key_file is not None:
        return StateKey.from_file(key_file)
    if key_fd is not None:
        return StateKey.from_fd(key_fd)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m card_applet.serve", description=__doc__)
    parser.add_argument("--state", required=True, type=Path, help="the card's EEPROM file")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--vpcd", default=f"127.0.0.1:{DEFAULT_PORT}",
                       help="connect to the reader at HOST:PORT")
    where.add_argument("--listen", help="listen on HOST:PORT for a vpcd in loopback mode")
    where.add_argument("--serial", metavar="DEVICE",
                       help="ISO 7816-3 T=1 on a serial line: a tty, a pty or a pyserial URL")
    where.add_argument("--vpcd-fd", type=int, metavar="N",
                       help="serve the already connected vpcd socket inherited as fd N")
    key_from = parser.add_mutually_exclusive_group()
    key_from.add_argument("--state-key-file", type=Path, metavar="PATH",
                          help="the key of a sealed state, read from this file")
    key_from.add_argument("--state-key-fd", type=int, metavar="N",
                          help="the key of a sealed state, read from fd N to its end")
    parser.add_argument("--tear-after-writes", type=int, default=None,
                        help="test facility: SIGKILL self right after the Nth EEPROM write")
    parser.add_argument("--crc", action="store_true",
                        help="with --serial: announce CRC (TC3) instead of LRC for T=1 blocks")
    parser.add_argument("--protocol", choices=SERIAL_PROTOCOLS, default=None,
                        help="with --serial: what the ATR offers: t1 (default), both (T=0 "
                             "first, T=1 by PPS) or t0 (T=0 only)")
    parser.add_argument("--delay", action="append", default=[], metavar="INS:SECONDS",
                        help="test facility: commands with this INS (hex) take this long")
    parser.add_argument("--trace", action="store_true",
                        help="log every command received and its answer, secrets redacted")
    parser.add_argument("--trace-full", action="store_true",
                        help="with --trace: all of the data, not its first 64 bytes")
    parser.add_argument("--trace-secrets", action="store_true",
                        help="with --trace: the secrets too (throw-away cards only)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if (args.trace_full or args.trace_secrets) and not args.trace:
        parser.error("--trace-full and --trace-secrets work only with --trace")
    if not args.serial and (args.crc or args.delay or args.protocol):
        parser.error("--crc, --delay and --protocol work only with --serial")
    if args.crc and args.protocol == "t0":
        parser.error("--crc names a T=1 epilogue: it cannot go with --protocol t0")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s card %(levelname)s %(message)s")
    trace = None
    if args.trace:
        card_log.setLevel(TRAFFIC)
        trace = CardTrace(TraceStyle(secrets=args.trace_secrets, full=args.trace_full))
        if args.trace_secrets:
            log.warning("--trace-secrets: the trace shows PINs, order plaintext and keys")
    try:
        host, port = parse_endpoint(args.listen or args.vpcd)
        delays = parse_delays(args.delay)
        channel = inherited_channel(args.vpcd_fd) if args.vpcd_fd is not None else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.state.exists():
        print(f"error: no card state at {args.state} (manufacture one with `nettx card new`)",
              file=sys.stderr)
        return 2
    try:
        key = read_state_key(args.state_key_file, args.state_key_fd)
        if args.serial:
            try:
                serve_serial_until_signalled(args.state, args.serial,
                                             tear_after_writes=args.tear_after_writes,
                                             delays=delays, crc=args.crc, key=key,
                                             trace=trace, protocol=args.protocol or "t1")
            except OSError as exc:  # pyserial's SerialException is an OSError
                print(f"error: serial line {args.serial}: {exc}", file=sys.stderr)
                return 1
            return 0
        serve_until_signalled(args.state, host, port, listen=args.listen is not None,
                              tear_after_writes=args.tear_after_writes, key=key,
                              channel=channel, trace=trace)
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
