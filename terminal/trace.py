"""APDU trace: one log line per command and per response, at TRAFFIC level (below DEBUG).

Secrets never reach the log unless the user asks for them (`show_secrets`, the CLI's
`--trace-secrets`, which then shows them whole, not elided): the data of every command that
carries a PIN, a key, a row or order plaintext is replaced by its length, in both directions.
That is VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER (PINs, PUK), PERFORM SECURITY
OPERATION (ENCIPHER's input and DECIPHER's output are the order's plaintext: card number,
expiry, name, destination), the authentication commands (challenges and cryptograms under
pair or transport keys), and the personalisation commands (rows, PIN, PUK). A response is
redacted when the command it answers was, including the GET RESPONSE commands that fetch the
rest of it.
"""

from __future__ import annotations

import logging
import threading

from card_applet.apdu import CommandApdu, ResponseApdu
from card_applet.sw import describe

TRAFFIC = 5
logging.addLevelName(TRAFFIC, "TRAFFIC")
log = logging.getLogger("nettx.apdu")

# VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER, PSO, EXTERNAL / INTERNAL / GENERAL
# AUTHENTICATE (ISO/IEC 7816-4 11.5, 11.6)
_REDACTED_INTER_INDUSTRY = frozenset({0x20, 0x24, 0x2C, 0x2A, 0x82, 0x88, 0x86, 0x87})
# INITIALIZE UPDATE, STORE DATA, SET STATUS: personalisation (GlobalPlatform-style)
_REDACTED_PROPRIETARY = frozenset({0x50, 0xE2, 0xF0})
GET_RESPONSE = 0xC0
_SHOWN = 64  # bytes of data shown before eliding

_show_secrets = False
# reader name -> whether the last command sent there was secret: its response (and the GET
# RESPONSE that fetch the rest of it) are redacted too
_answering_secret: dict[str, bool] = {}
_lock = threading.Lock()


def show_secrets(enabled: bool) -> None:
    """Trace secret data as any other (a debugging aid the user asks for explicitly)."""
    global _show_secrets
    _show_secrets = enabled


def _hex(data: bytes) -> str:
    if len(data) <= _SHOWN:
        return data.hex(" ").upper()
    return data[:_SHOWN].hex(" ").upper() + f" ... ({len(data)} bytes)"


def is_secret(cmd: CommandApdu) -> bool:
    """Whether the command's data (and its response's) is a secret."""
    table = _REDACTED_PROPRIETARY if cmd.cla & 0x80 else _REDACTED_INTER_INDUSTRY
    return cmd.ins in table


def _shown(data: bytes, secret: bool) -> str:
    if not secret:
        return _hex(data)
    if _show_secrets:  # asked for: all of it, the point is to read the plaintext
        return data.hex(" ").upper()
    return f"<{len(data)} bytes redacted>"


def format_command(cmd: CommandApdu) -> str:
    header = f"{cmd.cla:02X} {cmd.ins:02X} {cmd.p1:02X} {cmd.p2:02X}"
    parts = [header]
    if cmd.data:
        parts.append(f"Lc={len(cmd.data)} {_shown(cmd.data, is_secret(cmd))}")
    if cmd.le is not None:
        parts.append(f"Le={cmd.le}")
    return " ".join(parts)


def format_response(resp: ResponseApdu, secret: bool = False) -> str:
    data = f"{_shown(resp.data, secret)} " if resp.data else ""
    return f"{data}SW={resp.sw:04X} ({describe(resp.sw)})"


def trace_command(reader: str, cmd: CommandApdu) -> None:
    with _lock:
        if not (cmd.ins == GET_RESPONSE and not cmd.cla & 0x80):
            _answering_secret[reader] = is_secret(cmd)
    if log.isEnabledFor(TRAFFIC):
        log.log(TRAFFIC, "%s SEND %s", reader, format_command(cmd))


def trace_response(reader: str, resp: ResponseApdu) -> None:
    if log.isEnabledFor(TRAFFIC):
        with _lock:
            secret = _answering_secret.get(reader, False)
        log.log(TRAFFIC, "%s RECV %s", reader, format_response(resp, secret))
