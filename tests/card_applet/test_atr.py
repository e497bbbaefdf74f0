"""ATR parsing (ISO/IEC 7816-3 8.2) against the card's own ATR and published ATRs of real
cards (as pcsc_scan prints them; listed in pcsc-tools' smartcard_list.txt)."""

from __future__ import annotations

import pytest

from card_applet.atr import (
    ATR,
    ATR_DUAL,
    ATR_T0,
    AtrError,
    AtrFault,
    Convention,
    Edc,
    atr_length,
    build_atr,
    inverse_to_direct,
    parse_atr,
    xor,
)

# hex, protocols, (Fi, Di), IFSC, BWI, CWI, historical bytes
REAL_CARDS = {
    "YubiKey 5 NFC": ("3B FD 13 00 00 81 31 FE 15 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40",
                      (1,), (372, 4), 254, 1, 5, bytes.fromhex("8073C021C0") + b"WYubiKey"),
    "NXP JCOP 3 v2.4.1": ("3B F8 13 00 00 81 31 FE 45 4A 43 4F 50 76 32 34 31 B7",
                          (1,), (372, 4), 254, 4, 5, b"JCOPv241"),
    "Belgian eID (T=0 only, no TCK)": ("3B 98 13 40 0A A5 03 01 01 01 AD 13 11",
                                       (0,), (372, 4), 32, 4, 13,
                                       bytes.fromhex("A503010101AD1311")),
    "Estonian EstEID 3.x (T=0 and T=1)": (
        "3B FE 18 00 00 80 31 FE 45 45 73 74 45 49 44 20 76 65 72 20 31 2E 30 A8",
        (0, 1), (372, 12), 254, 4, 5, b"EstEID ver 1.0"),
    "OpenPGP card v2": ("3B DA 18 FF 81 B1 FE 75 1F 03 00 31 C5 73 C0 01 40 00 90 00 0C",
                        (1,), (372, 12), 254, 7, 5, bytes.fromhex("0031C573C00140009000")),
}


@pytest.mark.parametrize("name", REAL_CARDS)
def test_real_card_atrs(name: str) -> None:
    text, protocols, fi_di, ifsc, bwi, cwi, historical = REAL_CARDS[name]
    raw = bytes.fromhex(text)
    atr = parse_atr(raw)
    assert atr.convention is Convention.DIRECT
    assert atr.protocols == protocols
    assert atr.fi_di == fi_di
    assert (atr.ifsc, atr.bwi, atr.cwi) == (ifsc, bwi, cwi)
    assert atr.historical == historical
    assert atr.tck == (raw[-1] if protocols != (0,) else None)
    assert atr_length(raw) == len(raw)
    assert atr_length(raw[:4]) is None or atr_length(raw[:4]) == len(raw)


def test_openpgp_interface_bytes_in_detail() -> None:
    atr = parse_atr(bytes.fromhex(REAL_CARDS["OpenPGP card v2"][0]))
    g1, g2, g3, g4 = atr.groups
    assert (g1.ta, g1.tb, g1.tc, g1.td) == (0x18, None, 0xFF, 0x81)
    assert (g2.protocol, g2.td) == (1, 0xB1)
    assert (g3.protocol, g3.ta, g3.tb, g3.td) == (1, 0xFE, 0x75, 0x1F)
    assert (g4.protocol, g4.ta) == (15, 0x03)  # T=15: global bytes (clock stop, class)
    assert atr.extra_guard_time == 0xFF
    assert atr.edc is Edc.LRC


def test_the_cards_atr() -> None:
    assert ATR.hex(" ").upper() == "3B 8B 81 31 FE 45 80 73 00 00 C0 55 6E 65 74 74 78 95"
    atr = parse_atr(ATR)
    assert atr.protocols == (1,)
    assert atr.fi_di == (372, 1)  # no TA1: Fd, Dd
    assert (atr.ifsc, atr.bwi, atr.cwi, atr.edc) == (254, 4, 5, Edc.LRC)
    assert atr.specific_mode is None
    assert atr.historical.endswith(b"nettx")


def test_crc_announced_by_tc3() -> None:
    body = bytes.fromhex("80 81 71 FE 45 01")  # T0, TD1, TD2 (TA3 TB3 TC3), TC3 b1 = CRC
    raw = b"\x3b" + body + bytes((xor(body),))
    assert parse_atr(raw).edc is Edc.CRC


def test_inverse_convention_read_by_a_direct_uart() -> None:
    # an inverse-convention card's TS 3F reads as 03 on a direct UART; every byte likewise
    raw = build_atr()
    as_read = inverse_to_direct(b"\x3f" + raw[1:])
    assert as_read[0] == 0x03
    atr = parse_atr(as_read)
    assert atr.convention is Convention.INVERSE
    assert atr.historical == parse_atr(raw).historical


@pytest.mark.parametrize("raw, message", [
    ("", "empty"),
    ("3C 00", "TS 3C"),
    ("3B 8B 81 31 FE 45 80 73 00 00 C0 55 6E 65 74 74 78 94", "TCK 94 wrong"),
    ("3B 8B 81 31 FE 45 80 73 00 00 C0 55 6E", "truncated"),
    ("3B 8B 81 31 FE 45 80 73 00 00 C0 55 6E 65 74 74 78 95 00", "after the ATR's end"),
    ("3B 9F 81 31 " + "00 " * 40, "at most 33"),
])
def test_malformed_atrs_are_refused(raw: str, message: str) -> None:
    with pytest.raises(AtrError, match=message):
        parse_atr(bytes.fromhex(raw))


def test_reserved_fi_di_and_ifsc() -> None:
    reserved_fi = parse_atr(bytes.fromhex("3B 10 70"))  # Fi index 7 is RFU
    with pytest.raises(AtrError, match="reserved"):
        _ = reserved_fi.fi_di
    reserved_ifsc = parse_atr(build_atr(ifsc=0xFF))
    with pytest.raises(AtrError, match="IFSC FF"):
        _ = reserved_ifsc.ifsc


@pytest.mark.parametrize("raw, byte", [
    ("3B 81 1F 00 CC 52", "TD1 1F \\(byte 3 of the ATR\\)"),
    ("3F FF 3F 3F 3F 3F 00 3F 3F 3F 3F 3F 3F 3F 3F 3F 3F 3F 3F 3F 3F 3F 3F",
     "TD1 3F \\(byte 6 of the ATR\\)"),
    ("3B 80 1F C7 80 31 E0 73 FE 21 11 63 40 71 63 83 07 90 00 9A",
     "TD1 1F \\(byte 3 of the ATR\\)"),
])
def test_t15_in_td1_is_refused_naming_the_byte(raw: str, byte: str) -> None:
    # read as "no protocol named: T=0" these once passed; 8.2.3 says T=15 is invalid in TD1
    with pytest.raises(AtrError, match=f"{byte} announces T=15, which ISO/IEC 7816-3 8.2.3 "
                                       "forbids in TD1") as exc:
        parse_atr(bytes.fromhex(raw))
    assert exc.value.fault is AtrFault.T15_IN_TD1


def test_t15_after_the_first_protocol_is_fine() -> None:
    atr = parse_atr(bytes.fromhex("3B 80 80 1F 07 18"))  # TD1 T=0, TD2 T=15 (TA3 global)
    assert atr.protocols == (0,) and atr.groups[2].ta == 0x07


@pytest.mark.parametrize("raw, fault", [
    ("", AtrFault.EMPTY), ("3C 00", AtrFault.TS), ("3B 02 01", AtrFault.TRUNCATED),
    ("3B 00 00", AtrFault.TRAILING), ("3B 80 01 00", AtrFault.TCK),
])
def test_every_refusal_says_its_fault(raw: str, fault: AtrFault) -> None:
    with pytest.raises(AtrError) as exc:
        parse_atr(bytes.fromhex(raw))
    assert exc.value.fault is fault


def test_the_cards_t0_atrs() -> None:
    dual, t0 = parse_atr(ATR_DUAL), parse_atr(ATR_T0)
    assert ATR_DUAL.hex(" ").upper() == ("3B 8B 80 31 FE 45 80 73 00 00 C0 55 6E 65 74 74 78 "
                                         "94")
    assert dual.protocols == (0, 1)  # T=0 first: the default without a PPS
    assert (dual.ifsc, dual.bwi, dual.cwi, dual.wi) == (254, 4, 5, 10)
    assert ATR_T0.hex(" ").upper() == "3B 0B 80 73 00 00 80 55 6E 65 74 74 78"
    assert t0.protocols == (0,) and t0.tck is None and t0.wi == 10
    assert t0.historical[4] == 0x80  # command chaining, no extended Lc/Le under T=0
    with pytest.raises(ValueError, match="CRC is a T=1 epilogue"):
        build_atr(protocols=(0,), crc=True)


def test_wi_from_tc2_and_its_reserved_zero() -> None:
    assert parse_atr(bytes.fromhex("3B 80 40 14")).wi == 0x14  # TD1 T=0, TC2 14
    with pytest.raises(AtrError, match="TC2 00"):
        _ = parse_atr(bytes.fromhex("3B 80 40 00")).wi
