"""APDU traces as pcap: Wireshark's own decoder (tshark, Debian's package) reads every
exchange back as ISO 7816-4: class, instruction name, status word; secrets stay zeroed."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from card_applet.apdu import CommandApdu, ResponseApdu
from terminal.pcap import PcapWriter, datagram, exchange_bytes
from tests.tshark import fields, summary

AID = bytes.fromhex("F0455030373931393031")
PIN_BLOCK = bytes.fromhex("31323334FFFFFFFF")


def test_exchange_is_t0_shaped() -> None:
    select = CommandApdu(0, 0xA4, 4, 0, AID)
    assert exchange_bytes(select, ResponseApdu(b"", 0x6172)) == bytes.fromhex(
        "00A404000A") + AID + bytes.fromhex("6172")
    get = CommandApdu(0, 0xC0, 0, 0, le=256)
    assert exchange_bytes(get, ResponseApdu(b"\x6f\x00", 0x9000)) == bytes.fromhex(
        "00C00000006F009000")
    verify = CommandApdu(0, 0x20, 0, 0x81, PIN_BLOCK)
    assert exchange_bytes(verify, ResponseApdu(b"", 0x9000), hide_command=True) == bytes.fromhex(
        "0020008108" + "00" * 8 + "9000")


def test_datagram_is_ipv4_udp_gsmtap_with_a_valid_header_checksum() -> None:
    packet = datagram(b"\x00\xa4\x04\x00\x00\x90\x00", 7)
    assert packet[9] == 17 and packet[12:16] == packet[16:20] == bytes((127, 0, 0, 1))
    words = struct.unpack(">10H", packet[:20])
    total = sum(words)
    assert (total & 0xFFFF) + (total >> 16) == 0xFFFF
    assert struct.unpack(">HH", packet[20:24]) == (4729, 4729)
    assert packet[28:31] == bytes((2, 4, 4))  # GSMTAP v2, 4 words, type SIM


def test_tshark_decodes_every_exchange(tmp_path: Path) -> None:
    path = tmp_path / "trace.pcap"
    with PcapWriter(path) as pcap:
        pcap.write(CommandApdu(0, 0xA4, 4, 0, AID), ResponseApdu(b"", 0x6172))
        pcap.write(CommandApdu(0, 0xC0, 0, 0, le=0x72), ResponseApdu(bytes(0x72), 0x9000))
        pcap.write(CommandApdu(0, 0x20, 0, 0x81, PIN_BLOCK), ResponseApdu(b"", 0x63C2),
                   hide_command=True)
        pcap.write(CommandApdu(0x80, 0xE2, 0, 0, b"abc"), ResponseApdu(b"", 0x6D00))
    assert path.stat().st_mode & 0o777 == 0o600

    rows = fields(path, "gsm_sim.apdu.ins", "gsm_sim.apdu.sw", "gsm_sim.aid")
    assert [r[:2] for r in rows] == [["0xa4", "0x6172"], ["0xc0", "0x9000"],
                                     ["0x20", "0x63c2"], ["0xe2", "0x6d00"]]
    assert rows[0][2] == AID.hex()

    lines = summary(path)
    assert "GSM SIM" in lines[0] and "SELECT" in lines[0]
    assert "GET RESPONSE" in lines[1] and "VERIFY" in lines[2]
    raw = path.read_bytes()
    assert PIN_BLOCK not in raw  # the PIN block was zeroed


def test_a_capture_replaces_the_file_0600_and_never_through_a_symbolic_link(
        tmp_path: Path) -> None:
    old = tmp_path / "old.pcap"
    old.write_bytes(b"an earlier capture, left readable")
    old.chmod(0o644)
    with PcapWriter(old) as pcap:
        pcap.write(CommandApdu(0, 0xCA, 0, 0xC2, le=256), ResponseApdu(b"\x01", 0x9000))
    assert old.stat().st_mode & 0o777 == 0o600
    assert b"earlier" not in old.read_bytes()

    # a link planted where the capture goes would have it overwrite the link's target
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    link = tmp_path / "trace.pcap"
    os.symlink(target, link)
    with pytest.raises(OSError):
        PcapWriter(link)
    assert target.read_bytes() == b"keep me"
