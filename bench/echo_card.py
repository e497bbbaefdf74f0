"""The echo card: answers 90 00 to every command APDU, served over the vpcd protocol.

    python bench/echo_card.py --vpcd 127.0.0.1:PORT

It reuses card_applet.vpcd (CardSide + VpcdCard), so it has exactly our card process's
socket loop: TCP_NODELAY, TCP_QUICKACK before every recv, one sendall per reply. What it
lacks is the applet (APDU parsing, dispatch, crypto, EEPROM writes): through the same reader
it is the floor of our own loop. bench/minimal_echo.py, which shares no code with the
project, is the floor of any loop; the two side by side show what our loop costs.
SIGTERM / SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from card_applet.serve import parse_endpoint
from card_applet.vpcd import CardSide, VpcdCard

OK = b"\x90\x00"


class EchoCard:
    """The four verbs a vpcd card serves; every command gets 90 00, nothing else."""

    commands = 0

    def process(self, command: bytes) -> bytes:
        self.commands += 1
        return OK

    def power_on(self) -> None:
        pass

    def power_off(self) -> None:
        pass

    def reset(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/echo_card.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vpcd", required=True, help="connect to the reader at HOST:PORT")
    args = parser.parse_args(argv)
    try:
        host, port = parse_endpoint(args.vpcd)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    VpcdCard(CardSide(EchoCard()), host, port, stop=stop).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
