"""The fuzz harness for the applet's parser and dispatcher: one input is a power state and a
sequence of APDUs and resets; every response is checked against the card's invariants.

Input layout (so a fuzzer can reach deep states without learning them first):

    byte 0      preamble: b1-b0 = 0 nothing, 1 SELECT, 2 + VERIFY (right PIN), 3 + MSE peer;
                b2 = 1: a blank card (personalisation state) instead of an operational one
    then        records: op (1 byte), length (2 bytes, big-endian), data (length bytes);
                op & 3 == 3 is a reset (no data follows); op & 3 == 1 hands data to the key
                holder (below); anything else sends data as an APDU

The key holder. The harness made the card, so it knows what the issuer and the peer know:
the transport key, and the pair key of the peer (its row comes from the same small master
as the card's). A keyed record (op & 3 == 1, kind = op >> 2 % 6) wraps fuzzed contents into
commands that pass the card's cryptographic checks, so the paths behind them are fuzzed too:

    0   INITIALIZE UPDATE with host challenge data[:8]; the card's cryptogram is checked and
        the session key kept
    1   a C-MACed personalisation command: header data[:4], payload data[4:], MAC appended
        under the session key and the card's next counter
    2   DECIPHER of a box sealed peer -> holder: data = flags, len(AAD), len(context), AAD,
        context, plaintext; flags b0: alter one byte of the box
    3   EXTERNAL AUTHENTICATE answering the card's last challenge; data[0] b0: alter it
    4   ENCIPHER of data[3:] (AAD and context as in 2); the peer opens what the card sealed
    5   INTERNAL AUTHENTICATE of challenge data; the peer checks the answer

Oracles on top of the invariants below: an altered box or a wrong answer is never accepted;
with the peer set to that peer, a DECIPHER accepted gives back the plaintext sealed, and an
ENCIPHER or INTERNAL AUTHENTICATE accepted gives what the peer can open or verify.

Invariants, for every APDU (a violation raises `Finding`):
- `process` returns; the response ends in a status word the ISO families allow (61xx, 62xx,
  63xx, 64xx, 65xx, 67xx..6Fxx, 90xx), never 6F00 (an internal error the applet caught);
- the response is at most Ne + 2 bytes (Ne = 0 when Le is absent: a case 1 or 3 command gets
  no data, the rest goes to 61xx; except GET RESPONSE without Le, Ne = 256, docs/apdu.md
  3.12) and the card's buffers stay under MAX_COMMAND_DATA;
- one command takes less than MAX_SECONDS and, when tracemalloc is tracing, allocates at
  most MAX_ALLOCATION at its peak (tracing makes each run ~3x slower, so the bounded CI run
  leaves it off: NETTX_FUZZ_TRACEMALLOC=1 turns it on for a campaign);
- a rejected command leaves persistent state as it was, except 63Cx after VERIFY or CHANGE
  REFERENCE DATA (one PIN try spent) or RESET RETRY COUNTER (one PUK try spent): that
  counter goes down by one to the X of 63CX, nothing else moves.
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
from dataclasses import dataclass, replace

from card_applet import blom, keys
from card_applet import pin as pin_block
from card_applet.apdu import CommandApdu
from card_applet.applet import MAX_COMMAND_DATA, Applet
from card_applet.state import MemoryStore, PersistentState, manufacture
from card_applet.tlv import tlv
from card_applet.vocabulary import AID, Lifecycle, encode_pin

HOLDER = b"holder:fuzz@example.org"
PEER = b"seller:shop.example"
PIN, PUK = "1234", "12345678"
MAX_SECONDS = 2.0
# a few copies of the largest APDU: the biggest legitimate command peaks near 180 kB
MAX_ALLOCATION = 1 << 20
TRACE_ALLOCATION = os.environ.get("NETTX_FUZZ_TRACEMALLOC") == "1"
# the inter-industry commands that spend a try of the PIN, or of the PUK, on a wrong one
SPENDS_PIN = {0x20, 0x24}  # VERIFY, CHANGE REFERENCE DATA
SPENDS_PUK = {0x2C}  # RESET RETRY COUNTER
SW1_ALLOWED = {0x61, 0x62, 0x63, 0x64, 0x65, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D,
               0x6E, 0x6F, 0x90}

_SALT = bytes(range(16))
# a k = 4 master, symmetric: the card's row and the peer's give the same pair key
MASTER = [[pow(7, i + j + 3, blom.P) * (i + j + 1) % blom.P for j in range(4)] for i in range(4)]
ROW = blom.row_for(MASTER, blom.x_of(HOLDER))
ROW_BYTES = blom.row_to_bytes(ROW)
PAIR_KEY = blom.pair_key(blom.shared_element(blom.row_for(MASTER, blom.x_of(PEER)),
                                             blom.x_of(HOLDER)), PEER, HOLDER)
TRANSPORT_KEY = bytes(range(32))
CARD_AUTH_KEY = bytes(range(0x40, 0x60))  # INTERNAL AUTHENTICATE key 81: no PIN needed
OPERATIONAL = PersistentState(
    serial=bytes.fromhex("F022002200220022"), transport_key=bytes(32), pin_salt=_SALT,
    lifecycle=Lifecycle.OPERATIONAL, holder_id=HOLDER, row=ROW_BYTES,
    pin_hash=pin_block.pin_hash(_SALT, encode_pin(PIN)),
    puk_hash=pin_block.pin_hash(_SALT, encode_pin(PUK)),
    card_auth_key=CARD_AUTH_KEY)
BLANK = replace(manufacture(TRANSPORT_KEY, serial=bytes.fromhex("B1A2B3C4D5E6F708")),
                pin_salt=_SALT)

SELECT = bytes.fromhex("00A40400") + bytes((len(AID),)) + AID + b"\x00"
VERIFY = bytes.fromhex("0020008108") + encode_pin(PIN)
MSE = bytes.fromhex("00224 1A4".replace(" ", "")) + bytes((len(PEER) + 2,)) + tlv(0x83, PEER)


KEYED_KINDS = 6


class Finding(AssertionError):
    """An input that breaks an invariant."""


def records(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 1
    while i < len(data):
        op = data[i]
        if op & 3 == 3:
            out.append((op, b""))
            i += 1
            continue
        if i + 3 > len(data):
            break
        (n,) = struct.unpack(">H", data[i + 1 : i + 3])
        out.append((op, data[i + 3 : i + 3 + n]))
        i += 3 + n
    return out


def new_applet(preamble: int) -> Applet:
    applet = Applet(MemoryStore(BLANK if preamble & 4 else OPERATIONAL))
    for level, apdu in enumerate((SELECT, VERIFY, MSE), start=1):
        if preamble & 3 >= level:
            applet.process(apdu)
    return applet


def expected_ne(apdu: bytes) -> int:
    """The most data a response to this APDU may carry (data beyond it goes to 61xx)."""
    body = len(apdu) - 4
    if body == 1:
        return apdu[4] or 256
    if body >= 3 and apdu[4] == 0 and (body == 3 or body == 5 + int.from_bytes(apdu[5:7], "big")):
        return int.from_bytes(apdu[-2:], "big") or 65536
    if body >= 2 and apdu[4] != 0 and body == 2 + apdu[4]:
        return apdu[-1] or 256
    if body == 0 and apdu[0] & 0x80 == 0 and apdu[1] == 0xC0:
        return 256  # GET RESPONSE without Le: what a short response carries (apdu.md 3.12)
    return 0  # no Le (case 1 or 3, or malformed): no data at all (ISO 7816-4 5.1)


def check_one(applet: Applet, apdu: bytes) -> bytes:
    before = applet.store.load()
    tracing = tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    response = applet.process(apdu)
    elapsed = time.perf_counter() - start
    if tracing and (grown := tracemalloc.get_traced_memory()[1] - base) > MAX_ALLOCATION:
        raise Finding(f"command allocated {grown} bytes at its peak")
    if not isinstance(response, bytes) or len(response) < 2:
        raise Finding(f"response {response!r} has no status word")
    sw1, sw = response[-2], int.from_bytes(response[-2:], "big")
    if sw1 not in SW1_ALLOWED:
        raise Finding(f"status word {sw:04X} is not an ISO 7816-4 one")
    if sw == 0x6F00:
        raise Finding("6F00: the applet caught an internal exception")
    if len(response) - 2 > expected_ne(apdu):
        raise Finding(f"{len(response) - 2} data bytes for Ne = {expected_ne(apdu)}")
    if elapsed > MAX_SECONDS:
        raise Finding(f"command took {elapsed:.2f} s")
    if len(applet.v.chain_data) > MAX_COMMAND_DATA or len(applet.v.pending_response) > 65536:
        raise Finding("card buffer beyond its bound")
    after = applet.store.load()
    if sw1 in (0x90, 0x61) or after == before:
        return response
    # a wrong PIN or PUK: the try of that secret is spent, and only it
    if sw & 0xFFF0 == 0x63C0 and len(apdu) >= 2 and apdu[0] & 0x80 == 0:
        if apdu[1] in SPENDS_PIN:
            spent, counter = replace(before, pin_tries=before.pin_tries - 1), "pin_tries"
        elif apdu[1] in SPENDS_PUK:
            spent, counter = replace(before, puk_tries=before.puk_tries - 1), "puk_tries"
        else:
            raise Finding(f"{sw:04X} to INS {apdu[1]:02X}, which has no try counter, and "
                          "persistent state changed")
        if after != spent:
            raise Finding(f"{sw:04X} to INS {apdu[1]:02X} changed more than its {counter}")
        if getattr(after, counter) != sw & 0x0F:
            raise Finding(f"{sw:04X} but {counter} is now {getattr(after, counter)}")
        return response
    raise Finding(f"{sw:04X} rejected the command but persistent state changed")


class KeyHolder:
    """The issuer and the peer around one card: they hold its keys (see the layout above)."""

    def __init__(self, applet: Applet) -> None:
        self.applet = applet
        self.session: bytes | None = None  # the personalisation session key
        self.challenge: bytes | None = None  # the card's last GET CHALLENGE answer

    def send(self, apdu: bytes) -> tuple[bytes, int]:
        response = check_one(self.applet, apdu)
        sw = int.from_bytes(response[-2:], "big")
        if len(apdu) >= 4 and apdu[0] & 0x80 == 0 and apdu[1] == 0x84 and sw == 0x9000:
            self.challenge = response[:-2]
        return response[:-2], sw

    def _peer_is_set(self) -> bool:
        """The card works with the pair key the harness holds: its peer is PEER, and it holds
        HOLDER's row of the master (a keyed STORE DATA may have written another)."""
        peer, state = self.applet.v.peer, self.applet.state
        return (peer is not None and peer.identifier == PEER and state.holder_id == HOLDER
                and state.row == ROW_BYTES)

    def keyed(self, kind: int, data: bytes) -> None:
        if len(data) > MAX_COMMAND_DATA:
            return  # what it wraps would not fit in one APDU: nothing to learn there
        if kind == 0:
            host = (data + bytes(8))[:8]
            answer, sw = self.send(bytes.fromhex("8050000008") + host + b"\x00")
            if sw != 0x9000:
                return
            card = answer[8:16]
            self.session = keys.perso_session_key(TRANSPORT_KEY, host, card)
            if answer[16:] != keys.card_cryptogram(self.session, host, card):
                raise Finding("INITIALIZE UPDATE: the card's cryptogram does not verify")
        elif kind == 1:
            if len(data) < 4:
                return
            head, payload = data[:4], data[4:]
            perso = self.applet.v.perso
            counter = perso.counter + 1 if perso is not None else 1
            mac_header = bytes((head[0] & ~0x10 & 0xFF, *head[1:]))
            mac = keys.command_mac(self.session or bytes(32), counter, mac_header, payload)
            self.send(CommandApdu(*head, payload + mac).to_bytes())
        elif kind in (2, 4):
            if len(data) < 3:
                return
            flags, aad_size, context_size = data[:3]
            aad = data[3 : 3 + aad_size]
            context = data[3 + len(aad) : 3 + len(aad) + context_size]
            text = data[3 + len(aad) + len(context) :]
            tail = tlv(0x81, aad) + tlv(0x82, context)
            if kind == 2:
                self._decipher(flags, text, aad, context, tail)
            else:
                self._encipher(text, aad, context, tail)
        elif kind == 3:
            challenge = self.challenge or b""
            self.challenge = None
            key = keys.confirm_key(PAIR_KEY, PEER, HOLDER)
            answer = bytearray(keys.confirm_mac(key, challenge))
            altered = bool(data[:1]) and bool(data[0] & 1)
            if altered:
                answer[data[1:2][0] % len(answer) if data[1:2] else 0] ^= 0x01
            _, sw = self.send(bytes.fromhex("0082000010") + answer)
            if sw == 0x9000 and (altered or not challenge or not self._peer_is_set()):
                raise Finding("EXTERNAL AUTHENTICATE accepted a wrong answer")
        else:
            challenge = data[:64]
            answer, sw = self.send(CommandApdu(0x00, 0x88, 0, 0, challenge, 256).to_bytes())
            key = keys.confirm_key(PAIR_KEY, HOLDER, PEER)
            if sw == 0x9000 and self._peer_is_set() and answer != keys.confirm_mac(key,
                                                                                 challenge):
                raise Finding("INTERNAL AUTHENTICATE answered what the peer cannot verify")

    def _decipher(self, flags: int, text: bytes, aad: bytes, context: bytes,
                  tail: bytes) -> None:
        box = bytearray(keys.seal(keys.seal_key(PAIR_KEY, PEER, HOLDER, context), 1, text, aad))
        altered = bool(flags & 1)
        if altered:
            box[(flags >> 1) % len(box)] ^= 0x80
        apdu = CommandApdu(0x00, 0x2A, 0x80, 0x86, tlv(0x86, bytes(box)) + tail, 65536, True)
        answer, sw = self.send(apdu.to_bytes())
        if sw == 0x9000 and (altered or not self._peer_is_set()):
            raise Finding("DECIPHER accepted a box altered or sealed by another peer")
        if sw == 0x9000 and answer != text:
            raise Finding("DECIPHER gave back something else than the plaintext sealed")

    def _encipher(self, text: bytes, aad: bytes, context: bytes, tail: bytes) -> None:
        apdu = CommandApdu(0x00, 0x2A, 0x86, 0x80, tlv(0x80, text) + tail, 65536, True)
        box, sw = self.send(apdu.to_bytes())
        if sw != 0x9000 or not self._peer_is_set():
            return
        try:
            atc, opened = keys.open_sealed(keys.seal_key(PAIR_KEY, HOLDER, PEER, context), box,
                                           aad)
        except ValueError as exc:
            raise Finding(f"ENCIPHER: the peer cannot open the box ({exc})") from exc
        if opened != text or atc != self.applet.atc:
            raise Finding("ENCIPHER: the box holds another plaintext or counter")


def run_one(data: bytes) -> None:
    if not data:
        return
    if TRACE_ALLOCATION and not tracemalloc.is_tracing():
        tracemalloc.start()
    holder = KeyHolder(new_applet(data[0]))
    for op, apdu in records(data):
        if op & 3 == 3:
            holder.applet.reset()
        elif op & 3 == 1:
            holder.keyed((op >> 2) % KEYED_KINDS, apdu)
        else:
            holder.send(apdu)


@dataclass(frozen=True, slots=True)
class Keyed:
    """A keyed record: what the key holder wraps (kind as in the layout above)."""

    kind: int
    data: bytes


def encode(preamble: int, *steps: bytes | Keyed | None) -> bytes:
    """An input in the layout above; None is a reset."""
    out = bytearray((preamble,))
    for step in steps:
        if step is None:
            out.append(3)
        elif isinstance(step, Keyed):
            out += bytes((1 | step.kind << 2,)) + struct.pack(">H", len(step.data)) + step.data
        else:
            out += b"\x00" + struct.pack(">H", len(step)) + step
    return bytes(out)


def sealing(flags: int, aad: bytes, context: bytes, text: bytes) -> bytes:
    """The data of a keyed DECIPHER or ENCIPHER record."""
    return bytes((flags, len(aad), len(context))) + aad + context + text


def seeds() -> dict[str, bytes]:
    """The seed corpus: one input per command family, in the states where they work."""
    h = bytes.fromhex
    plain = tlv(0x80, b"hello") + tlv(0x81, b"hdr")
    return {
        "select": encode(0, SELECT, h("00A4040C05F045503037"), h("00A4040205F04550303700")),
        "get-data": encode(1, h("00CA00C000"), h("00CA00C204"), h("00C0000000"), h("00CA00C6")),
        "verify": encode(1, h("00200081"), h("002000810839393939FFFFFFFF"), VERIFY,
                         h("0020FF81")),
        "change-pin": encode(1, h("002400811031323334FFFFFFFF35363738FFFFFFFF")),
        "unblock": encode(1, *[h("002000810839393939FFFFFFFF")] * 3,
                          h("002C01810831323334353637 38".replace(" ", ""))),
        "encipher": encode(3, h("002A8680") + bytes((len(plain),)) + plain + b"\x10",
                           h("00C0000000")),
        "decipher": encode(3, h("002A8086") + bytes((len(plain),)) + tlv(0x86, bytes(40))),
        "chain": encode(3, h("102A868004800568656C"), h("002A8680036C6F0000"),
                        h("102A868002AAAA"), h("00840000 08".replace(" ", ""))),
        "card-auth": encode(1, h("0088008120") + bytes(range(32)) + h("00"),
                            h("0088008110") + bytes(16), h("0088008200"), h("00880081")),
        "auth": encode(3, h("0084000008"), h("00880000080102030405060708 00".replace(" ", "")),
                       h("0082000010") + bytes(16)),
        "extended": encode(3, h("002A868000000A") + tlv(0x80, b"extended") + h("0000")),
        "perso": encode(5, h("805000000811223344556677 88".replace(" ", "")),
                        h("80E20000") + bytes((4 + 8,)) + h("DF1002AAAA") + bytes(7)),
        "reset": encode(2, None, h("0084000008"), SELECT, None, h("00200081")),
        "bad-class": encode(1, h("FFA40400"), h("01A40400"), h("0CA40400"), h("80CA00C0")),
        "perso-keyed": encode(
            5, Keyed(0, b"hostchal"), Keyed(1, h("80E20000") + tlv(0xDF10, HOLDER)),
            Keyed(1, h("80E20000") + tlv(0xDF11, ROW_BYTES)),
            Keyed(1, h("80E20000") + tlv(0xDF12, encode_pin(PIN))),
            Keyed(1, h("80E20000") + tlv(0xDF13, encode_pin(PUK))),
            Keyed(1, h("80E20000") + tlv(0xDF14, CARD_AUTH_KEY)),
            Keyed(1, h("80E20000") + tlv(0xDF10, b"\xff")), Keyed(1, h("80F00005")),
            SELECT, VERIFY, MSE, Keyed(4, sealing(0, b"hdr", b"part/1", b"hello"))),
        "perso-bad-mac": encode(5, Keyed(0, b""), Keyed(1, h("80E20000")), h("80F0000510")
                                + bytes(16), Keyed(1, h("80F00005"))),
        "decipher-keyed": encode(3, Keyed(2, sealing(0, b"hdr", b"part/1", b"secret")),
                                 Keyed(2, sealing(1 | 20 << 1, b"", b"", bytes(300))),
                                 Keyed(2, sealing(0, b"", bytes(70), b"x"))),
        "auth-keyed": encode(3, h("0084000008"), Keyed(3, b"\x00"), h("0084000010"),
                             Keyed(3, b"\x01\x05"), Keyed(3, b""), Keyed(5, bytes(range(16)))),
        "encipher-keyed": encode(3, Keyed(4, sealing(0, b"aad", b"ctx", bytes(1000)))),
    }
