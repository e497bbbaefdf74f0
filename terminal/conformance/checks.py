"""The ISO/IEC 7816-4 checks, in run order. Clauses are those of ISO/IEC 7816-4:2005.

Each check starts on a freshly reset card (the runner's `Probe.start`), talks raw APDUs, and
returns a short reason. Checks that cost the card something (a PIN try) refuse to run without
what they need to undo it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from card_applet.apdu import ResponseApdu
from card_applet.tlv import TlvError, parse
from terminal.conformance.model import Deviation, Failed, NotApplicable, check
from terminal.conformance.probe import (
    GET_RESPONSE,
    SELECT,
    Probe,
    at_most,
    executed,
    expect,
    other_pin,
    pin_block,
    refused,
    sw_text,
)
from terminal.errors import CardRemovedError, NoCardError, ReaderError

GET_CHALLENGE, MANAGE_CHANNEL, RESET_RETRY_COUNTER = 0x84, 0x70, 0x2C
UNASSIGNED_INS = 0x02  # no ISO/IEC 7816 part defines it in the inter-industry class
RFU_CLA = 0x20  # 7816-4:2005 table 2: '2X' and '3X' are reserved for future use
UNKNOWN_AID = bytes.fromhex("F04E4F5355434841505031")  # "F0" + "NOSUCHAPP1"
REFUSALS = (0x6D00, 0x6E00, 0x6881, 0x6884, 0x6A81, 0x6A86, 0x6B00, 0x6A80)


def _maybe_select(p: Probe) -> None:
    """Commands that do not need the application still want it current if there is one
    (a card with nothing selected may refuse everything with 6985)."""
    with contextlib.suppress(NotApplicable):
        p.select_application(required=False)


def _challenge(p: Probe, le: int | None, *, extended: bool = False) -> ResponseApdu:
    _maybe_select(p)
    resp = p.send(0x00, GET_CHALLENGE, 0, 0, le=le, extended=extended)
    if resp.sw in (0x6D00, 0x6E00, 0x6A81, 0x6982, 0x6985):
        where = "" if p.target.aid is None else " (the application was not found)"
        raise NotApplicable(f"GET CHALLENGE not offered here{where}: {sw_text(resp.sw)}")
    return resp


def _fci_aid(data: bytes) -> bytes | None:
    """The DF name (84) of an FCI template (6F), if the response is one."""
    try:
        (outer,) = parse(data)
        if outer.tag != 0x6F:
            return None
        for item in parse(outer.value):
            if item.tag == 0x84:
                return item.value
    except (TlvError, ValueError):
        return None
    return None


def _full_fci(p: Probe) -> bytes:
    return p.select_application(p2=0x00).data


# -- the application under test ---------------------------------------------------------------

# First: an AID the card does not have fails here, by name (Probe.select_application)


@check("select-aid", "7.1.1; 5.3.3 (FCI)", "SELECT by full AID; the FCI names that AID")
def select_aid(p: Probe) -> str:
    data = _full_fci(p)
    named = _fci_aid(data)
    if named is None:
        return f"9000, {len(data)} bytes (no FCI template with a DF name to compare)"
    if named != p.target.aid:
        raise Failed(f"FCI names DF {named.hex().upper()}")
    return "9000, FCI tag 84 = the AID"


# -- command-response pairs: cases and lengths ------------------------------------------------


@check("case-1", "5.1 table 1; 7.5.6", "case 1 (no Lc, no Le): VERIFY status query")
def case_1(p: Probe) -> str:
    p.need_reference()
    if p.target.aid is not None:  # else the card's default context
        p.select_application()
    resp = p.verify(None)
    if resp.sw == 0x6700:
        raise Failed("a case 1 VERIFY (status query) was refused as a wrong length (6700)",
                     resp.sw, (0x63C0,))
    if resp.sw == 0x6300:  # "verification failed": the query was taken for a wrong PIN
        raise Failed("status query answered 6300 (verification failed, no retry count): "
                     "taken for a wrong PIN, not answered with the tries left (63Cx)",
                     resp.sw, (0x63C0, 0x9000, 0x6983))
    if resp.data or not (resp.sw in (0x9000, 0x6983) or resp.sw & 0xFFF0 == 0x63C0):
        raise Failed(f"status query answered {resp.data.hex() or 'no data,'} {sw_text(resp.sw)}",
                     resp.sw, (0x63C0, 0x9000, 0x6983))
    return f"answered {sw_text(resp.sw)} without data"


@check("case-2s", "5.1 table 1; 7.5.3", "case 2 short: GET CHALLENGE with Le = 08")
def case_2s(p: Probe) -> str:
    resp = _challenge(p, 8)
    expect(resp, 0x9000, "GET CHALLENGE Le=08")
    if len(resp.data) != 8:
        raise Failed(f"Le = 08 gave {len(resp.data)} bytes")
    return "8 bytes, 9000"


@check("le-00-is-256", "5.1 (Le field '00' = Ne 256)", "short Le = 00 means up to 256 bytes")
def le_256(p: Probe) -> str:
    # Only a response longer than a typical Le shows that 00 was read as 256 and not as
    # some small number: the FCI if there is an application, else a long challenge
    if p.target.aid is not None:
        full = _full_fci(p)
        if len(full) > 8:
            return _le_00_fci(p, full)
    resp = _challenge(p, 256)
    expect(resp, 0x9000, "GET CHALLENGE Le=00")
    at_most(resp, 256, "GET CHALLENGE Le=00")
    if len(resp.data) <= 8:
        raise NotApplicable(f"GET CHALLENGE with Le = 00 gave {len(resp.data)} bytes, which "
                            "fewer than Ne allows: no response known to be longer (--aid)")
    return f"GET CHALLENGE: {len(resp.data)} bytes for Ne = 256"


def _le_00_fci(p: Probe, full: bytes) -> str:
    aid = p.target.aid
    assert aid is not None
    resp = p.send(0x00, SELECT, 0x04, 0x00, aid, le=256)
    at_most(resp, 256, "SELECT with Le = 00")
    via = "SELECT"
    if resp.sw1 == 0x61 and not resp.data:  # T=0: a case 4 command's data comes by GET RESPONSE
        resp = p.send(0x00, GET_RESPONSE, 0, 0, le=256)
        at_most(resp, 256, "GET RESPONSE with Le = 00")
        via = "SELECT, 61xx, GET RESPONSE"
    if resp.sw1 == 0x6C:
        raise NotApplicable(f"the card asks for the exact length ({resp.sw:04X}) where Le = 00 "
                            "would do: see wrong-le-6cxx")
    if resp.sw != 0x9000 and resp.sw1 != 0x61:
        raise Failed(f"{via} with Le = 00: {sw_text(resp.sw)}")
    if not resp.data or not full.startswith(resp.data):
        raise Failed(f"{via} with Le = 00 gave {len(resp.data)} bytes that are not the start "
                     f"of the {len(full)}-byte FCI")
    if resp.sw == 0x9000 and resp.data != full[:256]:
        raise Failed(f"{via} with Le = 00 gave {len(resp.data)} of the {len(full)}-byte FCI "
                     "and 9000: Le = 00 read as less than 256")
    return f"{via}: {len(resp.data)} bytes of the {len(full)}-byte FCI for Ne = 256"


@check("le-0000-is-65536", "5.1 (Le field '0000' = Ne 65536)",
       "extended Le = 0000 means up to 65536 bytes")
def le_65536(p: Probe) -> str:
    p.need_extended()
    resp = _challenge(p, 65536, extended=True)
    expect(resp, 0x9000, "GET CHALLENGE Le=0000 (extended)")
    if not 0 < len(resp.data) <= 65536:
        raise Failed(f"Le = 0000 gave {len(resp.data)} bytes")
    return f"{len(resp.data)} bytes for Ne = 65536"


@check("case-3s", "5.1 table 1; 7.1.1", "case 3 short: SELECT by AID, no response data")
def case_3s(p: Probe) -> str:
    resp = p.select_application(p2=0x0C)
    if resp.data:
        raise Failed(f"P2 = 0C asks for no response data, got {len(resp.data)} bytes")
    return "9000, no data"


@check("case-4s", "5.1 table 1; 7.1.1", "case 4 short: SELECT by AID returning FCI")
def case_4s(p: Probe) -> str:
    data = _full_fci(p)
    if not data:
        raise Failed("SELECT with P2 = 00 and Le = 00 returned no FCI")
    return f"{len(data)} bytes of FCI"


@check("case-3e-4e", "5.1 table 1 (extended Lc and Le)",
       "cases 3 and 4 extended: SELECT by AID in extended form")
def case_extended(p: Probe) -> str:
    p.need_extended()
    short = _full_fci(p)
    aid = p.target.aid
    assert aid is not None
    resp = p.send(0x00, SELECT, 0x04, 0x0C, aid, extended=True)
    expect(resp, 0x9000, "extended case 3 SELECT")
    resp = p.fetch_all(p.send(0x00, SELECT, 0x04, 0x00, aid, 65536, extended=True))
    expect(resp, 0x9000, "extended case 4 SELECT")
    if resp.data != short:
        raise Failed("the FCI differs between the short and the extended SELECT")
    return f"case 3E 9000, case 4E same {len(short)}-byte FCI as short"


@check("wrong-lc", "5.1; 5.1.3 ('6700')", "Lc that does not match the data: 6700")
def wrong_lc(p: Probe) -> str:
    _maybe_select(p)
    data = (p.target.aid or bytes.fromhex("3F00"))[:5]
    header = bytes((0x00, SELECT, 0x04 if p.target.aid else 0x00, 0x0C))
    try:
        # a malformed APDU must not be executed (that would be a guess at the command);
        # 6700 says why it was refused, any other refusal is a deviation
        longer = p.raw(header + bytes((len(data) + 5,)) + data)  # Lc says more than follows
        refused(p, longer, 0x6700, "Lc larger than the data field")
        # and less: Lc = 2 before 4 or more bytes is neither case 3 (Lc bytes) nor case 4
        # (Lc bytes and Le), whatever the card makes of the data
        shorter = p.raw(header + bytes((2,)) + (data if len(data) >= 4 else data * 2))
        refused(p, shorter, 0x6700, "Lc smaller than the data field")
    except (CardRemovedError, NoCardError):
        raise
    except ReaderError as exc:
        # a reader or driver that checks APDUs itself (PC/SC, T=0 TPDU mapping) may refuse
        # the malformed one before the card sees it: nothing is learnt about the card
        raise NotApplicable(f"the reader refused the malformed APDU: {exc}") from exc
    return f"Lc above the data length: {longer.sw:04X}, below: {shorter.sw:04X}"


@check("wrong-cla", "5.1.1 table 2; 5.1.3 ('6E00')", "reserved class byte 20: 6E00")
def wrong_cla(p: Probe) -> str:
    _maybe_select(p)
    resp = p.send(RFU_CLA, GET_CHALLENGE, 0, 0, le=8)
    refused(p, resp, 0x6E00, "GET CHALLENGE with CLA 20")
    return f"{resp.sw:04X}"


@check("unknown-ins", "5.1.2; 5.1.3 ('6D00')", "unassigned instruction 02: 6D00")
def unknown_ins(p: Probe) -> str:
    _maybe_select(p)
    resp = p.send(0x00, UNASSIGNED_INS, 0, 0)
    refused(p, resp, 0x6D00, "INS 02")
    return f"{resp.sw:04X}"


@check("wrong-p1p2", "5.1.3 ('6A86', '6B00'); 7.1.1 table 39",
       "reserved P1 and P2 of SELECT: 6A86 or 6B00")
def wrong_p1p2(p: Probe) -> str:
    _maybe_select(p)
    data = p.target.aid or bytes.fromhex("3F00")
    bad_p1 = p.send(0x00, SELECT, 0x7F, 0x0C, data)
    refused(p, bad_p1, (0x6A86, 0x6B00), "SELECT P1 = 7F (RFU)")
    bad_p2 = p.send(0x00, SELECT, 0x04, 0x7C, data)
    refused(p, bad_p2, (0x6A86, 0x6B00), "SELECT P2 = 7C (b8-b5 RFU)")
    return f"P1 7F: {bad_p1.sw:04X}, P2 7C: {bad_p2.sw:04X}"


# -- response chaining and Le correction ------------------------------------------------------


@check("get-response", "5.1.3 ('61XX'); 7.6.1", "61xx then GET RESPONSE returns the rest")
def get_response(p: Probe) -> str:
    full = _full_fci(p)
    if len(full) <= 8:
        raise NotApplicable(f"FCI of {len(full)} bytes is too short to split")
    aid = p.target.aid
    assert aid is not None
    first = p.send(0x00, SELECT, 0x04, 0x00, aid, le=4)
    at_most(first, 4, "SELECT with Le = 04")
    if first.sw1 == 0x6C:
        raise NotApplicable(f"the card corrects Le with {first.sw:04X} (see wrong-le-6cxx)")
    if first.sw == 0x9000:
        raise NotApplicable("the card truncates the response to Ne with 9000 (no 61xx)")
    if first.sw1 != 0x61:
        raise Failed(f"SELECT with Le = 04: {sw_text(first.sw)}")
    # T=0 carries no Le in a case 4 command (7816-3, case 4S): bare 61xx, all data to come
    if first.data not in (b"", full[:4]):
        raise Failed("the first 4 bytes differ from the whole FCI's")
    got, resp, steps = bytearray(first.data), first, 0
    while resp.sw1 == 0x61:  # Le = 5 at first: the card must keep counting correctly
        le = 5 if steps == 0 else (resp.sw2 or 256)
        resp = p.send(0x00, GET_RESPONSE, 0, 0, le=le)
        at_most(resp, le, f"GET RESPONSE with Le = {le % 256:02X}")
        got += resp.data
        steps += 1
        if steps > 64:
            raise Failed("GET RESPONSE never ends")
    expect(resp, 0x9000, "last GET RESPONSE")
    if bytes(got) != full:
        raise Failed("the reassembled response differs from the FCI read in one go")
    return f"{len(full)} bytes in {steps + 1} pieces"


@check("get-response-nothing", "7.6.1", "GET RESPONSE with nothing pending returns nothing")
def get_response_nothing(p: Probe) -> str:
    # 7.6.1 says what GET RESPONSE returns when something is pending and nothing about the
    # other case: a refusal and a 9000 with no data (Ne is a maximum, 5.1: zero bytes is
    # within it) both say "nothing". Data, or 61xx announcing some, would be a response
    # that does not exist (or a stale one: another command's data leaking).
    _maybe_select(p)
    resp = p.send(0x00, GET_RESPONSE, 0, 0, le=256)
    if resp.data or resp.sw1 == 0x61:
        raise Failed(f"answered {len(resp.data)} bytes with {sw_text(resp.sw)} "
                     "though no response was pending", resp.sw, (0x9000,))
    if resp.sw == 0x9000:
        return "9000 with no data: nothing pending"
    return sw_text(resp.sw)


@check("wrong-le-6cxx", "5.1.3 ('6CXX')", "6Cxx: re-issued with Le = xx gives xx bytes")
def wrong_le(p: Probe) -> str:
    full = _full_fci(p)
    aid = p.target.aid
    assert aid is not None
    resp = p.send(0x00, SELECT, 0x04, 0x00, aid, le=1)
    at_most(resp, 1, "SELECT with Le = 01")
    if resp.sw1 != 0x6C:
        raise NotApplicable(f"the card does not correct Le: a short Le gave {resp.sw:04X}")
    again = p.send(0x00, SELECT, 0x04, 0x00, aid, le=resp.sw2 or 256)
    at_most(again, resp.sw2 or 256, f"SELECT re-issued with Le = {resp.sw2:02X}")
    expect(again, 0x9000, "re-issued SELECT")
    if again.data != full:
        raise Failed("the re-issued command returned other data")
    return f"6C{resp.sw2:02X} then {len(again.data)} bytes"


# -- command chaining -------------------------------------------------------------------------


def _chain_split(p: Probe) -> tuple[bytes, bytes]:
    aid = p.target.aid
    if aid is None or len(aid) < 2:
        raise NotApplicable("no AID to split across a chain (--aid)")
    p.select_application()  # the application must exist for a chained SELECT to mean much
    p.start()
    return aid[: len(aid) // 2], aid[len(aid) // 2 :]


@check("chaining", "5.1.1.1", "command chaining: SELECT by AID in two chained links")
def chaining(p: Probe) -> str:
    head, tail = _chain_split(p)
    first = p.send(0x10, SELECT, 0x04, 0x0C, head)
    if first.sw == 0x6884:  # chaining may be offered for some commands only (5.1.3)
        raise NotApplicable("first link answered 6884: no command chaining for SELECT")
    if first.sw != 0x9000:
        if not p.caps.chaining:
            raise NotApplicable(f"first link answered {first.sw:04X} and the ATR does not "
                                "advertise command chaining")
        raise Failed(f"the ATR advertises chaining, first link: {sw_text(first.sw)}")
    last = p.send(0x00, SELECT, 0x04, 0x0C, tail)
    expect(last, 0x9000, "last link")
    return f"{len(head)} + {len(tail)} bytes, 9000"


@check("chaining-interrupted", "5.1.1.1; 5.1.3 ('6883')",
       "a different command inside a chain is never mixed with it")
def chaining_interrupted(p: Probe) -> str:
    # 7816-4 forbids the interface device to interleave commands in a chain; what the card
    # does when one comes anyway is left open. Refusing it (6883, "last command of the chain
    # expected") and keeping the chain is allowed, and so is dropping the chain to execute
    # it. Not allowed: executing it and still joining the next link to the old chain, which
    # would assemble one command from the parts of two.
    head, tail = _chain_split(p)
    first = p.send(0x10, SELECT, 0x04, 0x0C, head)
    if first.sw != 0x9000:
        raise NotApplicable(f"command chaining refused ({first.sw:04X})")
    other = p.send(0x00, GET_CHALLENGE, 0, 0, le=8)
    executed = other.sw == 0x9000 or other.sw1 == 0x61
    last = p.send(0x00, SELECT, 0x04, 0x0C, tail)
    if executed and last.sw == 0x9000:
        raise Failed(f"GET CHALLENGE inside the chain was executed ({other.sw:04X}) and the "
                     "last link was still joined to the chain before it")
    if executed:
        return (f"interloper executed ({other.sw:04X}), chain dropped: "
                f"orphan last link {last.sw:04X}")
    kept = "kept: last link joined" if last.sw == 0x9000 else "dropped: orphan last link"
    return f"interloper refused ({other.sw:04X}), chain {kept} {last.sw:04X}"


# -- logical channels -------------------------------------------------------------------------


def _channel_cla(n: int) -> int:
    return n if n <= 3 else 0x40 | (n - 4)


@check("manage-channel", "5.1.1.2; 7.1.2", "MANAGE CHANNEL open, use, close")
def manage_channel(p: Probe) -> str:
    resp = p.send(0x00, MANAGE_CHANNEL, 0x00, 0x00, le=1)
    if resp.sw != 0x9000:
        if p.caps.logical_channels == 0 and resp.sw in REFUSALS:
            raise NotApplicable(f"no logical channels: MANAGE CHANNEL answered {resp.sw:04X} "
                                "and the ATR advertises none")
        raise Failed(f"MANAGE CHANNEL open: {sw_text(resp.sw)}")
    if len(resp.data) != 1 or not 1 <= resp.data[0] <= 19:
        raise Failed(f"MANAGE CHANNEL open returned {resp.data.hex()} (one channel number)")
    n = resp.data[0]
    used = "no application to select on it"
    if p.target.aid is not None:
        sel = p.send(_channel_cla(n), SELECT, 0x04, 0x0C, p.target.aid)
        expect(sel, (0x9000, 0x6A82), f"SELECT on channel {n}")
        used = f"SELECT there {sel.sw:04X}"
    close = p.send(0x00, MANAGE_CHANNEL, 0x80, n)
    expect(close, 0x9000, f"MANAGE CHANNEL close {n}")
    after = p.send(_channel_cla(n), GET_CHALLENGE, 0, 0, le=8)
    refused(p, after, 0x6881, f"command on closed channel {n}")
    return f"opened channel {n}, {used}, closed; then 6881"


@check("channel-not-open", "5.1.1.2; 5.1.3 ('6881', '6E00')",
       "a command on a logical channel that is not open: 6881 or 6E00")
def channel_not_open(p: Probe) -> str:
    _maybe_select(p)
    resp = p.send(0x03, GET_CHALLENGE, 0, 0, le=8)  # channel 3: the last a '0X' CLA names
    # 6881 (logical channel not supported) says it best; a card without channels may refuse
    # the whole class instead (6E00): either way the command is not executed on channel 0
    refused(p, resp, (0x6881, 0x6E00), "GET CHALLENGE on channel 3")
    return sw_text(resp.sw)


# -- selection --------------------------------------------------------------------------------


def _partial(p: Probe) -> bytes:
    aid = p.target.aid
    if aid is None:
        raise NotApplicable("no AID given (--aid)")
    if len(aid) <= 5:
        raise NotApplicable("AID of 5 bytes or less: no shorter partial AID (7.1.1)")
    p.select_application()
    p.start()
    return aid[:5]


@check("select-partial-aid", "7.1.1 (P2 b2-b1 = 00, right-truncated DF name)",
       "SELECT by a 5-byte partial AID, first occurrence")
def select_partial(p: Probe) -> str:
    partial = _partial(p)
    resp = p.fetch_all(p.send(0x00, SELECT, 0x04, 0x00, partial, 256))
    if resp.sw in (0x6A82, 0x6A86, 0x6A81):  # not found, P1-P2 or function not supported
        if not p.caps.partial_df_name:
            raise NotApplicable(f"{resp.sw:04X}, and the ATR does not advertise selection by "
                                "partial DF name")
        raise Failed("the ATR advertises selection by partial DF name, SELECT gave "
                     f"{sw_text(resp.sw)}")
    expect(resp, 0x9000, "SELECT partial AID")
    named = _fci_aid(resp.data)
    if named is not None and not named.startswith(partial):
        raise Failed(f"selected DF {named.hex().upper()} does not start with the partial AID")
    return f"selected {named.hex().upper() if named else 'an application'}"


@check("select-next", "7.1.1 (P2 b2-b1 = 10, next occurrence)",
       "SELECT next occurrence: another application, or 6A82")
def select_next(p: Probe) -> str:
    partial = _partial(p)
    first = p.fetch_all(p.send(0x00, SELECT, 0x04, 0x00, partial, 256))
    if first.sw != 0x9000:
        raise NotApplicable(f"partial AID selection gave {first.sw:04X}")
    nxt = p.fetch_all(p.send(0x00, SELECT, 0x04, 0x02, partial, 256))
    if nxt.sw == 0x6A82:
        return "6A82: no further application with that prefix"
    if nxt.sw in (0x6A86, 0x6A81, 0x6B00):  # selecting the next occurrence is optional
        raise NotApplicable(f"next occurrence not offered: {sw_text(nxt.sw)}")
    expect(nxt, 0x9000, "SELECT next occurrence")
    a, b = _fci_aid(first.data), _fci_aid(nxt.data)
    if a is None or b is None:
        raise Failed("9000 to next occurrence, but no DF name to show it is another one")
    if a == b:
        raise Failed(f"next occurrence selected the same application {a.hex().upper()}")
    return f"next: {b.hex().upper()}"


@check("select-unknown", "7.1.1; 5.1.3 ('6A82')", "SELECT of an absent AID: 6A82")
def select_unknown(p: Probe) -> str:
    resp = p.send(0x00, SELECT, 0x04, 0x0C, UNKNOWN_AID)
    refused(p, resp, 0x6A82, f"SELECT {UNKNOWN_AID.hex().upper()}")
    return f"{resp.sw:04X}"


# -- the file system (7816-4 5.3 and 8.2.1.1): MF, EFs by identifier and by path -----------

READ_BINARY = 0xB0
MF = bytes.fromhex("3F00")
RFU_FID = bytes.fromhex("FFFF")  # 7816-4 5.3.1.1: 'FFFF' is reserved for future use
# what a card without a file system (or without the MF) answers SELECT MF with
NO_FILE_SYSTEM = (0x6A82, 0x6A86, 0x6A81, 0x6A80, 0x6B00, 0x6D00, 0x6E00, 0x6985, 0x6700)
MAX_FILE = 4096  # bytes of an EF the checks read before they stop


def _select_mf(p: Probe) -> None:
    """SELECT MF by its identifier, no response data; a card that refuses has no file
    system and the file checks are not applicable."""
    resp = p.send(0x00, SELECT, 0x00, 0x0C, MF)
    if not executed(resp) and resp.sw in NO_FILE_SYSTEM:
        raise NotApplicable(f"no file system: SELECT MF (3F00) answered {sw_text(resp.sw)}")
    expect(resp, 0x9000, "SELECT MF (3F00), P2 = 0C")
    if resp.data:
        raise Failed(f"SELECT MF with P2 = 0C (no response data) returned {len(resp.data)} "
                     "bytes")


def _read(p: Probe, offset: int, le: int) -> ResponseApdu:
    return p.send(0x00, READ_BINARY, offset >> 8, offset & 0xFF, le=le)


def _read_whole(p: Probe) -> bytes | None:
    """The current EF's content, read 256 bytes at a time from offset 0 (None: READ BINARY
    refused at offset 0, not a transparent EF the checks can use)."""
    data = bytearray()
    while len(data) < MAX_FILE:
        resp = _read(p, len(data), 256)
        at_most(resp, 256, f"READ BINARY at offset {len(data)}, Le = 00")
        if not data and not executed(resp):
            return None
        data += resp.data
        # Le = 00: "all bytes until the end of the file, within 256" (7.2.3): fewer than
        # 256 is the end, with 9000 or 6282 (end of file before Ne bytes)
        if len(resp.data) < 256 or resp.sw in (0x6282, 0x6B00):
            break
        if resp.sw != 0x9000:
            raise Failed(f"READ BINARY at offset {len(data) - len(resp.data)}: "
                         f"{sw_text(resp.sw)}", resp.sw, (0x9000, 0x6282))
    return bytes(data)


def _find_ef(p: Probe) -> tuple[bytes, bytes]:
    """The first of the target's files under the MF that selects by identifier and reads:
    its identifier and its content."""
    _select_mf(p)
    tried = []
    for fid in p.target.files:
        name = fid.to_bytes(2, "big")
        resp = p.send(0x00, SELECT, 0x00, 0x0C, name)
        if resp.sw == 0x9000:
            content = _read_whole(p)
            if content is not None:
                return name, content
            tried.append(f"{name.hex().upper()} not readable")
        else:
            tried.append(f"{name.hex().upper()} {resp.sw:04X}")
        _select_mf(p)
    raise NotApplicable(f"no transparent EF under the MF ({', '.join(tried)})")


@check("select-fid", "7.1.1 table 39 (P1 = 00, 02); 5.3.1.1",
       "SELECT MF, then an EF by file identifier; the reserved FFFF is refused")
def select_fid(p: Probe) -> str:
    fid, content = _find_ef(p)
    name = fid.hex().upper()
    _select_mf(p)
    child = p.send(0x00, SELECT, 0x02, 0x0C, fid)  # P1 = 02: EF under the current DF
    expect(child, 0x9000, f"SELECT {name} with P1 = 02 (EF under the current DF)")
    if child.data:
        raise Failed(f"P2 = 0C returned {len(child.data)} bytes")
    if _read_whole(p) != content:
        raise Failed(f"after SELECT {name} with P1 = 02, READ BINARY reads other data "
                     "than after P1 = 00")
    _select_mf(p)
    refused(p, p.send(0x00, SELECT, 0x00, 0x0C, RFU_FID), 0x6A82, "SELECT FFFF (RFU)")
    return f"MF 9000; EF {name} by P1 = 00 and 02, {len(content)} bytes; FFFF refused"


@check("select-path", "7.1.1 table 39 (P1 = 08, 09); 5.3.1.2",
       "SELECT by path from the MF and from the current DF")
def select_path(p: Probe) -> str:
    fid, content = _find_ef(p)
    name = fid.hex().upper()
    p.reset_card()
    # P1 = 08: the path from the MF, without the MF's identifier
    from_mf = p.send(0x00, SELECT, 0x08, 0x0C, fid)
    expect(from_mf, 0x9000, f"SELECT path {name} from the MF (P1 = 08)")
    if _read_whole(p) != content:
        raise Failed(f"after SELECT path {name} (P1 = 08), READ BINARY reads other data")
    _select_mf(p)
    from_df = p.send(0x00, SELECT, 0x09, 0x0C, fid)  # P1 = 09: from the current DF, the MF
    expect(from_df, 0x9000, f"SELECT path {name} from the current DF (P1 = 09)")
    if _read_whole(p) != content:
        raise Failed(f"after SELECT path {name} (P1 = 09), READ BINARY reads other data")
    refused(p, p.send(0x00, SELECT, 0x08, 0x0C, fid + RFU_FID), 0x6A82,
            f"SELECT path {name} FFFF (absent)")
    return f"{name} by path from the MF (08) and from the current DF (09), same content"


def _template(data: bytes, tag: int, what: str) -> list[int]:
    """The tags inside a template `tag` that must be the whole response (5.3.3); a
    malformed one fails."""
    try:
        (outer,) = parse(data)
        if outer.tag != tag:
            raise Failed(f"{what}: template {outer.tag:02X}, expected {tag:02X}")
        return [item.tag for item in parse(outer.value)]
    except (TlvError, ValueError) as exc:
        if isinstance(exc, Failed):
            raise
        raise Failed(f"{what}: {data.hex().upper()} is not one well-formed BER-TLV "
                     f"template {tag:02X} ({exc})") from exc


def _fcp_item(data: bytes, tag: int) -> bytes | None:
    (outer,) = parse(data)
    return next((i.value for i in parse(outer.value) if i.tag == tag), None)


@check("select-fcp", "7.1.1 table 40; 5.3.3 (FCP 62, FCI 6F)",
       "SELECT returns a well-formed FCP (62) for P2 = 04, FCI for P2 = 00, nothing for 0C")
def select_fcp(p: Probe) -> str:
    _select_mf(p)  # P2 = 0C: no data, checked there
    mf = p.fetch_all(p.send(0x00, SELECT, 0x00, 0x04, MF, le=256))
    if not executed(mf):
        raise NotApplicable(f"SELECT MF with P2 = 04 (return FCP) answered {sw_text(mf.sw)}: "
                            "the card returns no FCP")
    expect(mf, 0x9000, "SELECT MF, P2 = 04")
    tags = _template(mf.data, 0x62, "FCP of the MF")
    named = _fcp_item(mf.data, 0x83)
    if named is not None and named != MF:
        raise Failed(f"the MF's FCP names file {named.hex().upper()} (tag 83)")
    try:
        fid, content = _find_ef(p)
    except NotApplicable:
        fid, content = None, b""
    if fid is not None:
        ef = p.fetch_all(p.send(0x00, SELECT, 0x00, 0x04, fid, le=256))
        expect(ef, 0x9000, f"SELECT {fid.hex().upper()}, P2 = 04")
        _template(ef.data, 0x62, f"FCP of {fid.hex().upper()}")
        named = _fcp_item(ef.data, 0x83)
        if named is not None and named != fid:
            raise Failed(f"the FCP of {fid.hex().upper()} names file {named.hex().upper()}")
        size = _fcp_item(ef.data, 0x80)  # data bytes, structure excluded
        if size is not None and len(content) < MAX_FILE and int.from_bytes(size) != len(content):
            raise Failed(f"the FCP of {fid.hex().upper()} gives {int.from_bytes(size)} bytes "
                         f"(tag 80), READ BINARY reads {len(content)}")
    # P2 = 00: the FCI, "optional use of FCI tag and length" (table 40): a 6F template or
    # the objects alone, well-formed BER-TLV either way
    fci = p.fetch_all(p.send(0x00, SELECT, 0x00, 0x00, MF, le=256))
    expect(fci, 0x9000, "SELECT MF, P2 = 00")
    try:
        parse(fci.data)
    except (TlvError, ValueError) as exc:
        raise Failed(f"the MF's FCI {fci.data.hex().upper()} is not BER-TLV") from exc
    tag_list = " ".join(f"{t:02X}" for t in tags)
    ef_part = "no EF to read" if fid is None else f"{fid.hex().upper()} FCP 62"
    return f"MF FCP 62 ({tag_list}), {ef_part}, FCI well-formed, P2 = 0C no data"


@check("read-binary", "7.2.3; 7.2.1 (offset in P1-P2)",
       "READ BINARY at offsets: each read is that slice of the file")
def read_binary(p: Probe) -> str:
    fid, content = _find_ef(p)
    n = len(content)
    if n < 4:
        raise NotApplicable(f"EF {fid.hex().upper()} holds {n} bytes: too few to read at "
                            "offsets")
    reads = [(1, 2), (n // 2, min(3, n - n // 2)), (n - 1, 1)]
    for offset, le in reads:
        resp = _read(p, offset, le)
        at_most(resp, le, f"READ BINARY at {offset}, Le = {le}")
        expect(resp, 0x9000, f"READ BINARY at {offset}, Le = {le} ({n - offset} bytes left)")
        if resp.data != content[offset : offset + le]:
            raise Failed(f"READ BINARY at {offset}, Le = {le}: {resp.data.hex().upper()}, "
                         f"the file has {content[offset : offset + le].hex().upper()} there")
    return (f"{fid.hex().upper()}: {n} bytes; " + ", ".join(f"{le} at {o}" for o, le in reads)
            + " match")


@check("read-past-end", "7.2.3; 5.1.3 ('6282', '6B00', '6CXX')",
       "READ BINARY past the end of the file: 6B00 beyond it, 6282 or 6Cxx across it")
def read_past_end(p: Probe) -> str:
    fid, content = _find_ef(p)
    n = len(content)
    if n < 2 or n >= MAX_FILE:
        raise NotApplicable(f"EF {fid.hex().upper()}: {n} bytes, no end to read past")
    # an offset at the end: no byte there to read (5.1.3 '6B00': wrong parameters P1-P2)
    beyond = _read(p, n, 1)
    if beyond.data:
        raise Failed(f"READ BINARY at offset {n}, the end of a {n}-byte file, returned "
                     f"{beyond.data.hex().upper()}", beyond.sw, (0x6B00,))
    if beyond.sw != 0x6B00:  # refused otherwise, or 6282 / 9000 with nothing
        p.deviations.append(Deviation(f"READ BINARY at offset {n} (the end)", beyond.sw,
                                      (0x6B00,)))
    # 2 bytes left, 5 asked: 6282 with the 2 bytes (end of file before Ne bytes), or 6C02
    # (wrong Le, exactly 2 available) and the re-issued read gives them
    left = content[n - 2 :]
    across = _read(p, n - 2, 5)
    at_most(across, 5, f"READ BINARY at {n - 2}, Le = 5")
    if across.sw1 == 0x6C:
        if across.sw2 != 2:
            raise Failed(f"READ BINARY at {n - 2} with 2 bytes left: {across.sw:04X} "
                         "names another length", across.sw, (0x6282, 0x6C02))
        again = _read(p, n - 2, 2)
        expect(again, 0x9000, "READ BINARY re-issued with Le = 02")
        if again.data != left:
            raise Failed("READ BINARY re-issued with Le = 02 returned other bytes")
        how = "6C02, then the 2 bytes"
    elif across.data:
        if across.data != left:
            raise Failed(f"READ BINARY at {n - 2}, Le = 5: {across.data.hex().upper()}, the "
                         f"file ends with {left.hex().upper()}", across.sw, (0x6282,))
        if across.sw not in (0x6282, 0x9000):
            raise Failed(f"READ BINARY at {n - 2}: data and {sw_text(across.sw)}",
                         across.sw, (0x6282,))
        if across.sw == 0x9000:  # right bytes, but no warning that Ne was not reached
            p.deviations.append(Deviation(f"READ BINARY of 5 at {n - 2}, 2 bytes left",
                                          across.sw, (0x6282, 0x6C02)))
        how = f"{across.sw:04X} with the 2 bytes"
    elif executed(across):
        raise Failed(f"READ BINARY at {n - 2} with 2 bytes left: no data, "
                     f"{sw_text(across.sw)}", across.sw, (0x6282, 0x6C02))
    else:
        p.deviations.append(Deviation(f"READ BINARY of 5 at {n - 2}, 2 bytes left",
                                      across.sw, (0x6282, 0x6C02)))
        how = f"refused, {across.sw:04X}"
    return f"{fid.hex().upper()}: at the end {beyond.sw:04X}; 5 asked, 2 left: {how}"


# -- secure messaging (5.1.1: CLA b4-b3) ----------------------------------------------------


@check("secure-messaging-cla", "5.1.1 table 2 (b4-b3); 5.1.3 ('6882')",
       "CLA with secure messaging bits on a card without it: refused, 6882")
def secure_messaging_cla(p: Probe) -> str:
    # a command that executes in plain, sent again with b4-b3 = 10 and 11 (SM as in clause
    # 6, header not / authenticated): a card without SM must not execute it as plain.
    # b4-b3 = 01 (proprietary SM) is left out: its format is each card's own.
    command: tuple[int, int, int, bytes, int | None]
    _maybe_select(p)
    plain = p.send(0x00, SELECT, 0x00, 0x0C, MF)
    if plain.sw == 0x9000:
        command, what = (SELECT, 0x00, 0x0C, MF, None), "SELECT MF"
    elif p.target.aid is not None:
        p.select_application()
        command, what = (SELECT, 0x04, 0x0C, p.target.aid, None), "SELECT the application"
    else:
        expect(_challenge(p, 8), 0x9000, "GET CHALLENGE")
        command, what = (GET_CHALLENGE, 0x00, 0x00, b"", 8), "GET CHALLENGE"
    answers = []
    for cla in (0x08, 0x0C):
        p.reset_card()
        _maybe_select(p)
        ins, p1, p2, data, le = command
        resp = p.send(cla, ins, p1, p2, data, le)
        refused(p, resp, 0x6882, f"{what} with CLA {cla:02X}")
        answers.append(f"CLA {cla:02X}: {resp.sw:04X}")
    return f"{what}: " + ", ".join(answers)


# -- security status and the PIN --------------------------------------------------------------


@check("security-status", "5.4; 5.1.3 ('6982'); 7.5.6",
       "a protected command: 6982 before VERIFY, allowed after")
def security_status(p: Probe) -> str:
    pin, _ = p.need_pin()
    if p.target.protected is None:
        raise NotApplicable("no command that needs the PIN given (--protected APDU)")
    p.select_application()
    before = p.raw(p.target.protected)
    refused(p, before, 0x6982, "protected command before VERIFY")
    expect(p.verify(pin), 0x9000, "VERIFY with the right PIN")
    after = p.raw(p.target.protected)
    if after.sw == 0x6982:
        raise Failed("still 6982 after a successful VERIFY")
    return f"6982 before, {after.sw:04X} after VERIFY"


INTERNAL_AUTHENTICATE = 0x88


@check("internal-authenticate", "7.5.2; 5.1.3 ('6A88', '6700')",
       "INTERNAL AUTHENTICATE by key reference, no PIN: fresh answers; 6A88, 6700")
def internal_authenticate(p: Probe) -> str:
    ref = p.target.auth_key_reference
    if ref is None:
        raise NotApplicable("no key reference for INTERNAL AUTHENTICATE given")
    p.select_application()
    first = p.fetch_all(p.send(0x00, INTERNAL_AUTHENTICATE, 0x00, ref, bytes(range(32)), 256))
    expect(first, 0x9000, f"INTERNAL AUTHENTICATE key {ref:02X} before any VERIFY")
    if not first.data:
        raise Failed("9000 without an answer")
    second = p.fetch_all(p.send(0x00, INTERNAL_AUTHENTICATE, 0x00, ref, bytes(range(1, 33)),
                                256))
    expect(second, 0x9000, "a second challenge")
    if second.data == first.data:
        raise Failed("two challenges, one answer: it could be replayed")
    unknown = 0x9F if ref != 0x9F else 0x9E  # the highest specific key number, or next
    refused(p, p.send(0x00, INTERNAL_AUTHENTICATE, 0x00, unknown, bytes(32), 256), 0x6A88,
            f"an absent key reference {unknown:02X}")
    refused(p, p.send(0x00, INTERNAL_AUTHENTICATE, 0x00, ref, le=256), (0x6700, 0x6A80),
            "no challenge at all")
    return (f"key {ref:02X}: {len(first.data)}-byte answers, fresh per challenge, without "
            "VERIFY; absent key 6A88; no challenge refused")


def _tries(p: Probe) -> int:
    resp = p.verify(None)
    if resp.sw == 0x6983:
        raise NotApplicable("the PIN is blocked; unblock it first")
    if resp.sw & 0xFFF0 != 0x63C0:
        raise Failed(f"status query after a reset: {sw_text(resp.sw)} (63Cx expected)")
    return resp.sw & 0x0F


class _PinGuard:
    """Leaves the PIN as the check found it, whatever happens in between: a check that fails
    halfway must not leave the card a try down, or blocked.

    The right PIN brings the counter back while tries remain; a blocked PIN needs RESET
    RETRY COUNTER with the PUK. A PIN or PUK the card refused during the check is not tried
    again: that would spend another try of a secret now known to be wrong.
    """

    def __init__(self, p: Probe, pin: str, ref: int) -> None:
        self.p, self.pin, self.ref = p, pin, ref
        self.pin_refused = self.puk_refused = False

    def right_pin(self) -> ResponseApdu:
        resp = self.p.verify(self.pin)
        self.pin_refused |= 0x63C1 <= resp.sw <= 0x63CF  # refused with tries left
        return resp

    def unblock(self) -> ResponseApdu:
        """RESET RETRY COUNTER, P1 = 01: the PUK alone, the PIN kept (7.5.10)."""
        puk = self.p.target.puk
        assert puk is not None
        resp = self.p.send(0x00, RESET_RETRY_COUNTER, 0x01, self.ref,
                           pin_block(puk, self.p.target.pin_format))
        self.puk_refused |= resp.sw & 0xFFF0 == 0x63C0 or resp.sw == 0x6983
        return resp

    def run(self, body: Callable[[], str]) -> str:
        """The check's body; on its way out with an error, the PIN is restored and the
        outcome added to the reason (a note on any other exception)."""
        try:
            return body()
        except Failed as exc:
            raise Failed(f"{exc}; {self.restore()}") from exc
        except (ReaderError, OSError):
            raise  # the card is gone: nothing to restore it with
        except BaseException as exc:
            exc.add_note(self.restore())
            raise

    def restore(self) -> str:
        p = self.p
        try:
            p.reset_card()  # the log keeps the failure's trace
            p.select_application()
            if not self.pin_refused:
                resp = self.right_pin()
                if resp.sw == 0x9000:
                    return "restored: the right PIN reset the try counter"
                if resp.sw not in (0x6983, 0x63C0):
                    return f"NOT RESTORED: the right PIN answered {sw_text(resp.sw)}"
            else:
                query = p.verify(None)
                if query.sw not in (0x6983, 0x63C0):
                    return ("NOT RESTORED: the card refused the PIN given; status "
                            f"{sw_text(query.sw)}")
            if p.target.puk is None or self.puk_refused:
                return "NOT RESTORED: THE PIN IS LEFT BLOCKED (no PUK to unblock it)"
            unblock = self.unblock()
            if unblock.sw != 0x9000:
                return ("NOT RESTORED: THE PIN IS LEFT BLOCKED, RESET RETRY COUNTER answered "
                        f"{sw_text(unblock.sw)}")
            return "restored: unblocked with the PUK"
        except Exception as exc:  # the report must still say how the card was left
            return f"NOT RESTORED: {type(exc).__name__}: {exc}"


def _still_blocked(p: Probe, resp: ResponseApdu, what: str) -> None:
    """6983 (authentication method blocked) is the answer; 63C0 (no try left) says the
    same thing less directly, a deviation; 9000 would be a failure."""
    if resp.sw == 0x63C0:
        p.deviations.append(Deviation(what, resp.sw, (0x6983,)))
        return
    refused(p, resp, 0x6983, what)


@check("pin-try-counter", "7.5.6; 7.5.1 ('63CX')",
       "63Cx counts down on a wrong PIN; the right PIN resets it")
def pin_try_counter(p: Probe) -> str:
    pin, ref = p.need_pin()
    p.select_application()
    n = _tries(p)
    if n < 2:
        raise NotApplicable(f"only {n} try left: a wrong PIN would block the card")
    guard = _PinGuard(p, pin, ref)

    def body() -> str:
        expect(p.verify(other_pin(pin)), 0x63C0 | (n - 1), "wrong PIN")
        expect(p.verify(None), 0x63C0 | (n - 1), "status query after a wrong PIN")
        expect(guard.right_pin(), 0x9000, "right PIN")
        expect(p.verify(None), 0x9000, "status query while verified")
        p.reset_card()
        p.select_application()
        if (m := _tries(p)) != n:
            raise Failed(f"after the right PIN the counter is {m}, not back to {n}")
        return f"63C{n:X} -> 63C{n - 1:X} -> 9000 -> 63C{n:X}"

    return guard.run(body)


@check("pin-blocked", "7.5.6; 5.1.3 ('6983'); 7.5.10",
       "no tries left: 6983, even for the right PIN; RESET RETRY COUNTER unblocks")
def pin_blocked(p: Probe) -> str:
    pin, ref = p.need_pin()
    if p.target.puk is None:
        raise NotApplicable("no PUK given (NETTX_PUK, --puk-file, --puk-fd, --ask-puk): "
                            "the PIN would stay blocked")
    p.select_application()
    n = _tries(p)
    guard = _PinGuard(p, pin, ref)

    def body() -> str:
        for left in range(n - 1, -1, -1):
            expect(p.verify(other_pin(pin)), 0x63C0 | left, "wrong PIN")
        _still_blocked(p, guard.right_pin(), "right PIN while blocked")
        _still_blocked(p, p.verify(None), "status query while blocked")
        expect(guard.unblock(), 0x9000, "RESET RETRY COUNTER with the PUK")
        expect(guard.right_pin(), 0x9000, "right PIN after RESET RETRY COUNTER")
        return f"{n} wrong tries, 6983 twice, unblocked with the PUK"

    return guard.run(body)
