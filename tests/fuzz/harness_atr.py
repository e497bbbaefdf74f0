"""Fuzz harness for the ATR and PPS parsers both sides use (card_applet/atr.py,
card_applet/line.py's `Pps`) and the reader's checks of them (terminal/serial.py).

Input layout: byte 0 chooses what the rest is: b0 = 0, an ATR as the reader reads it; b0 = 1,
a PPS answer to the reader's request (b1: the request carries PPS1 = 11).

Declared errors: `AtrError` from `parse_atr` and from the properties that read a reserved
value (`fi_di`, `ifsc`); `LineProtocolError` from `check_atr` and `check_pps_answer`; the
PPS codec's `ValueError`. Invariants (a violation raises `Finding`):
- nothing else escapes; `atr_length` never raises, on any prefix;
- an ATR that parses is exactly `atr_length` bytes long (the reader stops reading there),
  keeps its bytes (`raw`), and every property reads without error but the declared ones;
- an ATR the reader accepts gives line timings it can use (a positive baud rate and timers);
- a PPS answer the reader accepts confirms T=1 and echoes only what was requested.
"""

from __future__ import annotations

import contextlib

from card_applet.atr import ATR, ATR_CRC, AtrError, atr_length, inverse_to_direct, parse_atr
from card_applet.line import LineTiming, Pps
from terminal.errors import LineProtocolError
from terminal.serial import check_atr, check_pps_answer


class Finding(AssertionError):
    """An input that breaks an invariant."""


def check_atr_bytes(raw: bytes) -> None:
    for end in range(len(raw) + 1):
        length = atr_length(raw[:end])
        if length is not None and length < 2:
            raise Finding(f"atr_length({raw[:end].hex()}) = {length}")
    try:
        atr = parse_atr(raw)
    except AtrError:
        return
    direct = inverse_to_direct(raw) if raw[:1] == b"\x03" else raw
    if atr.raw != direct or atr_length(direct) != len(direct):
        raise Finding(f"ATR {raw.hex()} parsed, but its length or bytes differ")
    for name in ("protocols", "specific_mode", "extra_guard_time", "bwi", "cwi", "edc"):
        getattr(atr, name)
    for name in ("fi_di", "ifsc"):
        with contextlib.suppress(AtrError):
            getattr(atr, name)
    try:
        check_atr(atr)
    except LineProtocolError:
        return
    timing = LineTiming.from_atr(atr, atr.fi_di)
    # (CWT may exceed BWT: ISO's default CWI 13 at a slow Fi does; both only need to exist)
    if not (timing.baudrate > 0 and timing.cwt > 0 and timing.bwt > 0):
        raise Finding(f"ATR {raw.hex()} accepted with timings {timing}")
    if not 1 <= atr.ifsc <= 254 or 1 not in atr.protocols:
        raise Finding(f"ATR {raw.hex()} accepted with IFSC {atr.ifsc}, T={atr.protocols}")


def check_pps(request: Pps, raw: bytes) -> None:
    Pps.length(raw)
    with contextlib.suppress(ValueError):
        Pps.decode(raw)
    try:
        answer = check_pps_answer(request, raw)
    except LineProtocolError:
        return
    if answer.protocol != 1 or answer.pps1 not in (None, request.pps1) or answer.pps2 \
            is not None or answer.pps3 is not None:
        raise Finding(f"PPS answer {raw.hex()} accepted for {request}: {answer}")
    with contextlib.suppress(ValueError):
        answer.fi_di  # noqa: B018 - the reader reads it next


def run_one(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        check_pps(Pps(1, 0x11) if data[0] & 2 else Pps(1), data[1:])
    else:
        check_atr_bytes(data[1:])


def seeds() -> dict[str, bytes]:
    h = bytes.fromhex
    return {
        "atr": b"\x00" + ATR,
        "atr-crc": b"\x00" + ATR_CRC,
        "atr-ta1": b"\x00" + h("3B 9B 13 81 31 FE 45 80 73 00 00 C0 55 6E 65 74 74 78 96"),
        "atr-inverse": b"\x00" + h("3F 96 18 80 01 80 51 00 61 10 30 9F"),
        "atr-read-inverse": b"\x00" + h("03 96 E7 FE 7F FE 75 FF 79 F7 F3 06"),
        "atr-t0-only": b"\x00" + h("3B 02 14 50"),
        "atr-truncated": b"\x00" + ATR[:6],
        # TA1 Fi 744 and no T=1 bytes (so ISO's CWI 13): CWT 1.7 s is longer than BWT 1.65 s
        "atr-cwt-over-bwt": b"\x00" + h("3B 9B 31 81 80 13 45 FE 73 00 00 C0 55 6E 65 74 74 78 96"),
        "pps-echo": b"\x01" + h("FF 01 FE"),
        "pps-pps1": b"\x03" + h("FF 11 11 FF"),
        "pps-bad": b"\x03" + h("FF 71 11 00 00 8F"),
    }
