"""APDU traces Wireshark decodes: a pcap of GSMTAP frames of type SIM, one per exchange.

Wireshark's ISO 7816 decoder ("GSM SIM 11.11", packet-gsm_sim.c) is reached through GSMTAP,
Osmocom's encapsulation for SIM traces (SIMtrace uses the same): an IPv4/UDP datagram to port
4729 whose payload is a GSMTAP v2 header of type 4 (SIM) followed by one exchange in T=0's
shape: CLA INS P1 P2 P3, the command data, the response data, SW1 SW2. The file is classic
pcap, link type 101 (raw IP), both addresses 127.0.0.1: nothing is ever sent anywhere.

Secret data (what the trace redacts: PINs, PUKs, rows, plaintexts) is written as zero bytes
of the same length, so the structure stays readable and the secret does not. A command with more
than 255 data bytes (extended length) cannot be told in P3: it is written with P3 = 00 and
all its bytes, and Wireshark shows them as payload.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import BinaryIO

from card_applet.apdu import CommandApdu, ResponseApdu
from card_applet.durable import open_private

GSMTAP_PORT = 4729
GSMTAP_VERSION = 2
GSMTAP_TYPE_SIM = 4
LINKTYPE_RAW = 101
SNAPLEN = 0xFFFF
LOOPBACK = bytes((127, 0, 0, 1))
_MAX_PAYLOAD = 0xFFFF - 20 - 8 - 16  # an IPv4 datagram's total length is 16 bits


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def exchange_bytes(cmd: CommandApdu, resp: ResponseApdu, *, hide_command: bool = False,
                   hide_response: bool = False) -> bytes:
    """One exchange as GSMTAP's SIM payload: T=0 header, data, response data, SW; hidden
    data becomes zero bytes of its length."""
    data = bytes(len(cmd.data)) if hide_command else cmd.data
    answer = bytes(len(resp.data)) if hide_response else resp.data
    # P3 is Lc when there is data (00 when it does not fit a byte), else Le
    p3 = (len(data) if len(data) <= 0xFF else 0) if data else (cmd.le or 0) & 0xFF
    header = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2, p3))
    return header + data + answer + resp.sw.to_bytes(2, "big")


def datagram(payload: bytes, ident: int) -> bytes:
    """IPv4 + UDP + GSMTAP v2 (SIM) around `payload`, loopback to loopback."""
    payload = payload[:_MAX_PAYLOAD]
    gsmtap = bytes((GSMTAP_VERSION, 4, GSMTAP_TYPE_SIM, 0)) + bytes(12)  # 4 words, rest 0
    udp_len = 8 + len(gsmtap) + len(payload)
    udp = struct.pack(">HHHH", GSMTAP_PORT, GSMTAP_PORT, udp_len, 0)  # no UDP checksum
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0, 64, 17, 0,
                     LOOPBACK, LOOPBACK)
    ip = ip[:10] + _checksum(ip).to_bytes(2, "big") + ip[12:]
    return ip + udp + gsmtap + payload


class PcapWriter:
    """A new capture in a pcap file (an existing one is replaced), one record per exchange,
    each flushed, so a trace survives a killed process up to its last exchange. The file is
    created 0600 (an existing one is tightened to 0600) and refused if the path is a symbolic
    link: a trace is the user's, even with its secrets zeroed. OSError if it cannot be."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = open_private(path, os.O_TRUNC)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._file.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN,
                                     LINKTYPE_RAW))
        self._file.flush()
        self._count = 0

    def write(self, cmd: CommandApdu, resp: ResponseApdu, *, hide_command: bool = False,
              hide_response: bool = False, when: float | None = None) -> None:
        payload = exchange_bytes(cmd, resp, hide_command=hide_command,
                                 hide_response=hide_response)
        packet = datagram(payload, self._count)
        stamp = time.time() if when is None else when
        seconds, micros = int(stamp), int((stamp % 1) * 1_000_000)
        self._file.write(struct.pack("<IIII", seconds, micros, len(packet), len(packet)))
        self._file.write(packet)
        self._file.flush()
        self._count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
