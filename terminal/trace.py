"""APDU trace: one log line per command and per response, at TRAFFIC level (below DEBUG).

Secrets never reach the log: the data of VERIFY, CHANGE REFERENCE DATA, RESET RETRY
COUNTER and the personalisation commands is replaced by its length.
"""

from __future__ import annotations

import logging

from card_applet.apdu import CommandApdu, ResponseApdu
from card_applet.sw import describe

TRAFFIC = 5
logging.addLevelName(TRAFFIC, "TRAFFIC")
log = logging.getLogger("nettx.apdu")

_REDACTED_INTER_INDUSTRY = {0x20, 0x24, 0x2C}
_REDACTED_PROPRIETARY = {0xE2, 0xF0}
_SHOWN = 64  # bytes of data shown before eliding


def _hex(data: bytes) -> str:
    if len(data) <= _SHOWN:
        return data.hex(" ").upper()
    return data[:_SHOWN].hex(" ").upper() + f" ... ({len(data)} bytes)"


def is_secret(cmd: CommandApdu) -> bool:
    table = _REDACTED_PROPRIETARY if cmd.cla & 0x80 else _REDACTED_INTER_INDUSTRY
    return cmd.ins in table


def format_command(cmd: CommandApdu) -> str:
    header = f"{cmd.cla:02X} {cmd.ins:02X} {cmd.p1:02X} {cmd.p2:02X}"
    parts = [header]
    if cmd.data:
        shown = f"<{len(cmd.data)} bytes redacted>" if is_secret(cmd) else _hex(cmd.data)
        parts.append(f"Lc={len(cmd.data)} {shown}")
    if cmd.le is not None:
        parts.append(f"Le={cmd.le}")
    return " ".join(parts)


def format_response(resp: ResponseApdu) -> str:
    data = f"{_hex(resp.data)} " if resp.data else ""
    return f"{data}SW={resp.sw:04X} ({describe(resp.sw)})"


def trace_command(reader: str, cmd: CommandApdu) -> None:
    if log.isEnabledFor(TRAFFIC):
        log.log(TRAFFIC, "%s SEND %s", reader, format_command(cmd))


def trace_response(reader: str, resp: ResponseApdu) -> None:
    if log.isEnabledFor(TRAFFIC):
        log.log(TRAFFIC, "%s RECV %s", reader, format_response(resp))
