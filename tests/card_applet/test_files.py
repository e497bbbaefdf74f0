"""The ISO 7816-4 file structure (card_applet/files.py, docs/apdu.md 3.17 and 3.18): the MF,
EF.DIR, EF.ATR/INFO and the application's PKCS#15 files; SELECT by identifier and by path,
READ BINARY with offsets and short EF identifiers, and the status words around them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card_applet.files import APPLICATION_LABEL, CARD_CAPABILITIES
from card_applet.tlv import parse
from card_applet.vocabulary import AID, FileId, Ins
from tests.card_applet.conftest import (
    PIN,
    SERIAL,
    CardDriver,
    Reply,
    driver_for,
    h,
    personalised_state,
)

OK = 0x9000
EF_DIR = bytes.fromhex("61 1D 4F 0A") + AID + bytes((0x50, len(APPLICATION_LABEL))) \
    + APPLICATION_LABEL
READ = Ins.READ_BINARY


@pytest.fixture
def fresh() -> CardDriver:
    """Alice's card just after reset: nothing selected."""
    return driver_for(personalised_state())


def select(card: CardDriver, p1: int, data: bytes, p2: int = 0x04) -> Reply:
    return card.cmd(0x00, Ins.SELECT, p1, p2, data, None if p2 == 0x0C else 256)


def fcp_objects(reply: Reply, template: int = 0x62) -> dict[int, bytes]:
    assert reply.sw == OK
    (outer,) = parse(reply.data)
    assert outer.tag == template
    return {item.tag: item.value for item in parse(outer.value)}


# -- SELECT -----------------------------------------------------------------------------------


def test_the_mf_is_selectable_by_identifier_and_without_data(fresh: CardDriver) -> None:
    fci = fcp_objects(select(fresh, 0x00, h("3F 00"), 0x00), template=0x6F)
    assert fci == {0x82: b"\x38", 0x83: h("3F 00"), 0x8A: b"\x05"}
    assert fcp_objects(select(fresh, 0x00, b"")) == fci  # P1 00 without data: the MF
    assert select(fresh, 0x00, h("3F 00"), 0x0C) == Reply(b"", OK)


@pytest.mark.parametrize(("p1", "data"), [(0x00, "2F 00"), (0x02, "2F 00"), (0x08, "2F 00"),
                                          (0x09, "2F 00")])
def test_ef_dir_by_identifier_and_by_path(fresh: CardDriver, p1: int, data: str) -> None:
    fcp = fcp_objects(select(fresh, p1, h(data)))
    assert fcp == {0x80: len(EF_DIR).to_bytes(2, "big"), 0x82: b"\x01", 0x83: h("2F 00"),
                   0x88: bytes((30 << 3,)), 0x8A: b"\x05"}


def test_p2_0c_returns_nothing_and_p2_00_the_fci(fresh: CardDriver) -> None:
    assert select(fresh, 0x08, h("2F 01"), 0x0C) == Reply(b"", OK)
    assert fcp_objects(select(fresh, 0x08, h("2F 01"), 0x00), template=0x6F)[0x83] == h("2F 01")


@pytest.mark.parametrize(("p1", "data", "sw"), [
    (0x00, "12 34", 0x6A82),        # no such file
    (0x01, "2F 00", 0x6A82),        # an EF is not a child DF
    (0x02, "3F 00", 0x6A82),        # the MF is not an EF under the current DF
    (0x08, "3F 00 2F 00", 0x6A82),  # a path from the MF leaves the MF out
    (0x08, "2F 00 2F 01", 0x6A82),  # an EF has no children
    (0x09, "50 31", 0x6A82),        # the PKCS#15 files are in the application, not the MF
    (0x03, "", 0x6A82),             # the MF has no parent
    (0x00, "3F 00 00", 0x6A87),     # an identifier is two bytes
    (0x02, "", 0x6A87),
    (0x08, "2F", 0x6A87),           # a path is a whole number of identifiers
    (0x09, "", 0x6A87),
    (0x03, "3F 00", 0x6A87),        # P1 03 takes no data
])
def test_select_file_errors(fresh: CardDriver, p1: int, data: str, sw: int) -> None:
    assert select(fresh, p1, h(data)) == Reply(b"", sw)


@pytest.mark.parametrize("p2", [0x08, 0x01, 0x02, 0x10, 0x0D])
def test_select_file_p2_other_than_fci_fcp_or_nothing(fresh: CardDriver, p2: int) -> None:
    assert select(fresh, 0x00, h("2F 00"), p2).sw == 0x6A86


def test_a_failed_select_keeps_the_current_file(fresh: CardDriver) -> None:
    select(fresh, 0x00, h("2F 00"), 0x0C)
    assert select(fresh, 0x00, h("12 34")).sw == 0x6A82
    assert fresh.cmd(0x00, READ, 0, 0, le=len(EF_DIR)) == Reply(EF_DIR, OK)


def test_select_by_aid_is_unchanged_by_the_file_system(fresh: CardDriver) -> None:
    before = driver_for(personalised_state()).select()
    select(fresh, 0x00, h("3F 00"))
    select(fresh, 0x08, h("2F 00"))
    assert fresh.select() == before
    assert before.data.startswith(h("6F")) and AID in before.data
    assert fresh.cmd(0x00, Ins.SELECT, 0x04, 0x04, AID, 256).sw == 0x6A86  # no FCP for it


def test_application_files_are_selected_within_the_application(fresh: CardDriver) -> None:
    assert fresh.select().sw == OK
    assert fresh.verify().sw == OK
    fcp = fcp_objects(select(fresh, 0x02, h("50 32")))
    assert fcp[0x83] == h("50 32")
    assert fresh.send("00 20 00 81") == Reply(b"", OK)  # still in the application: verified
    assert fcp_objects(select(fresh, 0x00, h("50 31")))[0x83] == h("50 31")


def test_leaving_the_application_ends_its_session(fresh: CardDriver) -> None:
    assert fresh.select().sw == OK
    assert fresh.verify().sw == OK
    parent = fcp_objects(select(fresh, 0x03, b""))
    assert parent[0x83] == h("3F 00")
    assert fresh.send("00 20 00 81").sw == 0x6985  # application no longer selected
    assert fresh.select().sw == OK
    assert fresh.send("00 20 00 81").sw == 0x63C3  # and its PIN status is gone


def test_file_commands_need_no_application(fresh: CardDriver) -> None:
    assert fresh.send("00 CA 00 C2 00").sw == 0x6985
    assert fresh.cmd(0x00, READ, 0x80 | 30, 0, le=256).sw == 0x6282


# -- READ BINARY ------------------------------------------------------------------------------


def test_read_ef_dir_lists_the_application(fresh: CardDriver) -> None:
    select(fresh, 0x08, h("2F 00"), 0x0C)
    reply = fresh.cmd(0x00, READ, 0, 0, le=len(EF_DIR))
    assert reply == Reply(EF_DIR, OK)
    (template,) = parse(reply.data)
    fields = {item.tag: item.value for item in parse(template.value)}
    assert template.tag == 0x61
    assert fields == {0x4F: AID, 0x50: b"nettx EP0791901"}


def test_read_ef_atr_info(fresh: CardDriver) -> None:
    select(fresh, 0x00, h("2F 01"), 0x0C)
    reply = fresh.cmd(0x00, READ, 0, 0, le=256)
    assert reply.sw == 0x6282
    objects = {item.tag: item.value for item in parse(reply.data)}
    assert objects[0x47] == CARD_CAPABILITIES
    limits = [int.from_bytes(item.value, "big") for item in parse(objects[0x7F66])]
    assert limits == [33024, 65536]


@pytest.mark.parametrize(("offset", "le"), [(0, 1), (3, 4), (1, len(EF_DIR) - 1),
                                            (len(EF_DIR) - 1, 1), (0x10, 0x0D)])
def test_read_binary_with_offsets(fresh: CardDriver, offset: int, le: int) -> None:
    select(fresh, 0x00, h("2F 00"), 0x0C)
    reply = fresh.cmd(0x00, READ, offset >> 8, offset & 0xFF, le=le)
    assert reply == Reply(EF_DIR[offset : offset + le], OK)


def test_fewer_bytes_left_than_le_is_a_warning_with_the_data(fresh: CardDriver) -> None:
    select(fresh, 0x00, h("2F 00"), 0x0C)
    assert fresh.cmd(0x00, READ, 0, 0x10, le=0x40) == Reply(EF_DIR[0x10:], 0x6282)
    assert fresh.send("00 B0 00 00 00") == Reply(EF_DIR, 0x6282)  # Le 00: Ne = 256
    assert fresh.cmd(0x00, READ, 0, 0, le=65536, extended=True) == Reply(EF_DIR, 0x6282)


@pytest.mark.parametrize("offset", [len(EF_DIR), len(EF_DIR) + 1, 0x100, 0x7FFF])
def test_offset_at_or_beyond_the_end(fresh: CardDriver, offset: int) -> None:
    select(fresh, 0x00, h("2F 00"), 0x0C)
    assert fresh.cmd(0x00, READ, offset >> 8, offset & 0xFF, le=1) == Reply(b"", 0x6B00)


def test_read_binary_with_no_current_ef_or_on_a_df(fresh: CardDriver) -> None:
    assert fresh.cmd(0x00, READ, 0, 0, le=1).sw == 0x6986  # nothing selected since reset
    select(fresh, 0x00, h("3F 00"), 0x0C)
    assert fresh.cmd(0x00, READ, 0, 0, le=1).sw == 0x6981  # the MF is a DF
    assert fresh.select().sw == OK
    assert fresh.cmd(0x00, READ, 0, 0, le=1).sw == 0x6981  # so is the application
    assert fresh.cmd(0x00, READ, 0x80, 0, le=1).sw == 0x6981  # SFI 0: the current file


def test_read_binary_by_short_ef_identifier(fresh: CardDriver) -> None:
    assert fresh.cmd(0x00, READ, 0x80 | 30, 2, le=10) == Reply(EF_DIR[2:12], OK)
    # the EF read by SFI is now the current EF
    assert fresh.cmd(0x00, READ, 0x00, 12, le=2) == Reply(EF_DIR[12:14], OK)
    assert fresh.cmd(0x00, READ, 0x80, 0, le=2) == Reply(EF_DIR[:2], OK)
    atr = fresh.cmd(0x00, READ, 0x80 | 29, 0, le=2)
    assert atr == Reply(h("47 03"), OK)


@pytest.mark.parametrize(("p1", "sw"), [(0x80 | 5, 0x6A82), (0xA0 | 30, 0x6A86),
                                        (0xC0 | 30, 0x6A86)])
def test_read_binary_bad_short_ef_identifier(fresh: CardDriver, p1: int, sw: int) -> None:
    assert fresh.cmd(0x00, READ, p1, 0, le=1) == Reply(b"", sw)


def test_read_binary_lengths(fresh: CardDriver) -> None:
    select(fresh, 0x00, h("2F 00"), 0x0C)
    assert fresh.send("00 B0 00 00").sw == 0x6700  # case 2: Le is needed
    assert fresh.send("00 B0 00 00 01 00 10").sw == 0x6700  # and no data


def test_pkcs15_files_describe_the_token_and_its_pin(fresh: CardDriver) -> None:
    assert fresh.select().sw == OK
    contents = {}
    for fid in (FileId.EF_ODF, FileId.EF_TOKEN_INFO, FileId.EF_AODF):
        size = int.from_bytes(fcp_objects(select(fresh, 0x02, fid.to_bytes(2, "big")))[0x80],
                              "big")
        reply = fresh.cmd(0x00, READ, 0, 0, le=size)
        assert reply.sw == OK and len(reply.data) == size
        contents[fid] = reply.data
    (odf,) = parse(contents[FileId.EF_ODF])
    assert odf.tag == 0xA8 and odf.value.endswith(h("04 02 44 01"))  # authObjects: 4401
    (token,) = parse(contents[FileId.EF_TOKEN_INFO])
    fields = [(item.tag, item.value) for item in parse(token.value)]
    assert fields[:4] == [(0x02, b"\x00"), (0x04, SERIAL), (0x0C, b"nettx"),
                          (0x80, b"nettx EP0791901")]
    assert b"\x80\x02\x00\x81" in contents[FileId.EF_AODF]  # pinReference: VERIFY's P2 81
    assert PIN not in contents[FileId.EF_AODF].decode("latin-1")


def test_get_response_without_le_returns_up_to_256_bytes(fresh: CardDriver) -> None:
    """yubikit in extended mode sends GET RESPONSE as a case 1 command (docs/apdu.md 3.12)."""
    fci = driver_for(personalised_state()).select().data
    assert fresh.send(h("00 A4 04 00 0A") + AID).sw == 0x6100 | len(fci)
    assert fresh.send("00 C0 00 00") == Reply(fci, OK)
    assert fresh.send("00 C0 00 00").sw == 0x6985  # nothing left


def test_get_response_without_le_chains_a_long_response(fresh: CardDriver) -> None:
    assert fresh.select().sw == OK
    assert fresh.verify().sw == OK
    assert fresh.set_peer("seller:shop.example").sw == OK
    plain = bytes(600)
    first = fresh.cmd(0x00, Ins.PERFORM_SECURITY_OPERATION, 0x86, 0x80,
                      h("80 82 02 58") + plain)
    assert first == Reply(b"", 0x6100)  # no Le: everything pending
    parts = [fresh.send("00 C0 00 00") for _ in range(3)]
    assert [(len(p.data), p.sw) for p in parts] == [(256, 0x6100), (256, 0x6100 | 121),
                                                   (121, OK)]
    assert len(b"".join(p.data for p in parts)) == 600 + 33


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(0, 0x7FFF), ne=st.integers(1, 65536))
def test_read_binary_any_offset_and_ne(offset: int, ne: int) -> None:
    card = driver_for(personalised_state())
    select(card, 0x00, h("2F 00"), 0x0C)
    reply = card.cmd(0x00, READ, offset >> 8, offset & 0xFF, le=ne)
    if offset >= len(EF_DIR):
        assert reply == Reply(b"", 0x6B00)
    else:
        expected = EF_DIR[offset : offset + ne]
        assert reply == Reply(expected, OK if len(expected) == ne else 0x6282)
