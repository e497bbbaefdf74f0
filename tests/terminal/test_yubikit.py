"""yubikit (yubikey-manager's smart-card library) as a real client of the card, through the
suite's private pcscd + vpcd: SELECT, VERIFY, MSE and PSO ENCIPHER of 1 to 3,000 bytes, in
both of its APDU formats. Its SHORT mode chains commands in 255-byte links and reads long
answers with `00 C0 00 00 00`; its EXTENDED mode (YubiKey 4 and later) sends one extended
APDU and GET RESPONSE without Le (`00 C0 00 00`), which the card once refused with 6700.
Every box is opened by the peer's row, in-process, as the other pcscd tests do.

Needs root and Debian's pcscd and vsmartcard-vpcd (`make test` installs them); skipped
outside CI when missing, a failure under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from smartcard.System import readers
from ykman.pcsc import ScardSmartCardConnection
from yubikit.core import TRANSPORT, Version
from yubikit.core.smartcard import ApduFormat, SmartCardConnection, SmartCardProtocol

from card_applet.tlv import parse, tlv
from card_applet.vocabulary import (
    AID,
    PIN_REFERENCE,
    TAG_KEY_REFERENCE,
    TAG_PLAIN,
    Ins,
    Pso,
    encode_pin,
)
from terminal.cardproc import CardProcess
from tests.conftest import HOLDER, PCSC_READER, PIN, SELLER, Centre

pytestmark = pytest.mark.pcscd

# the edges: one byte; a one-byte TLV length (127/128); a box of 255/256/257 bytes (222..224,
# the box is 33 bytes longer); a data field of 255/256 bytes (252/253); 255..257 plain bytes;
# and the 3,000 bytes of the report
SIZES = [1, 127, 128, 222, 223, 224, 252, 253, 255, 256, 257, 1000, 2999, 3000]
YUBIKEY_5 = Version(5, 7, 0)


class UsbConnection(SmartCardConnection):
    """yubikit uses extended APDUs only over USB, which it tells from the ATR (T0 = Fx, as a
    YubiKey's); ours says NFC, so the test names the transport as ykman would for a key."""

    def __init__(self, inner: ScardSmartCardConnection) -> None:
        self.inner = inner
        self.sent: list[bytes] = []  # to show which APDU format really travelled

    @property
    def transport(self) -> TRANSPORT:
        return TRANSPORT.USB

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent.append(bytes(apdu))
        return self.inner.send_and_receive(apdu)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Yubikit:
    protocol: SmartCardProtocol
    connection: UsbConnection
    apdu_format: ApduFormat


@pytest.fixture(params=[ApduFormat.SHORT, ApduFormat.EXTENDED], ids=["short", "extended"])
def yubikit(request: pytest.FixtureRequest, served_card: CardProcess) -> Iterator[Yubikit]:
    (reader,) = [r for r in readers() if str(r) == PCSC_READER]
    connection = UsbConnection(ScardSmartCardConnection(reader.createConnection()))
    protocol = SmartCardProtocol(connection)
    protocol.configure(YUBIKEY_5, force_short=request.param == ApduFormat.SHORT)
    try:
        yield Yubikit(protocol, connection, request.param)
    finally:
        protocol.close()


def get_responses(sent: list[bytes]) -> set[bytes]:
    return {apdu for apdu in sent if apdu[1] == Ins.GET_RESPONSE}


def test_select_gives_the_fci(yubikit: Yubikit) -> None:
    fci = yubikit.protocol.select(AID)  # case 3: no Le, so the FCI comes back by GET RESPONSE
    (template,) = parse(fci)
    objects = {item.tag: item.value for item in parse(template.value)}
    assert template.tag == 0x6F
    assert objects[0x84] == AID
    assert HOLDER.encode() in objects[0xA5]
    select = yubikit.connection.sent[0]
    if yubikit.apdu_format == ApduFormat.EXTENDED:
        assert select == bytes.fromhex("00 A4 04 00 00 00 0A") + AID
        assert get_responses(yubikit.connection.sent) == {bytes.fromhex("00 C0 00 00")}
    else:
        assert select == bytes.fromhex("00 A4 04 00 0A") + AID
        assert get_responses(yubikit.connection.sent) == {bytes.fromhex("00 C0 00 00 00")}


def test_encipher_1_to_3000_bytes_opened_by_the_peer(yubikit: Yubikit, centre: Centre) -> None:
    protocol = yubikit.protocol
    protocol.select(AID)
    protocol.send_apdu(0x00, Ins.VERIFY, 0x00, PIN_REFERENCE, encode_pin(PIN))
    protocol.send_apdu(0x00, Ins.MANAGE_SECURITY_ENVIRONMENT, 0x41, 0xA4,
                       tlv(TAG_KEY_REFERENCE, SELLER.encode()))
    boxes = {}
    for size in SIZES:
        plain = bytes((size + i) & 0xFF for i in range(size))
        boxes[size] = protocol.send_apdu(0x00, Ins.PERFORM_SECURITY_OPERATION,
                                         Pso.ENCIPHER >> 8, Pso.ENCIPHER & 0xFF,
                                         tlv(TAG_PLAIN, plain))
    seller = centre.seller()
    seller.set_peer(HOLDER)
    for size, box in boxes.items():
        assert len(box) == size + 33
        assert seller.decrypt(box) == bytes((size + i) & 0xFF for i in range(size))
    pso = [a for a in yubikit.connection.sent if a[1] == Ins.PERFORM_SECURITY_OPERATION]
    if yubikit.apdu_format == ApduFormat.EXTENDED:
        assert len(pso) == len(SIZES)  # one extended APDU each, Lc on three bytes
        assert all(a[4] == 0 and int.from_bytes(a[5:7], "big") == len(a) - 7 for a in pso)
        assert get_responses(yubikit.connection.sent) == {bytes.fromhex("00 C0 00 00")}
    else:
        assert all(len(a) <= 5 + 255 for a in pso)
        assert sum(a[0] == 0x10 for a in pso) == sum((len(tlv(TAG_PLAIN, bytes(n))) - 1) // 255
                                                      for n in SIZES)  # chained links
        assert get_responses(yubikit.connection.sent) == {bytes.fromhex("00 C0 00 00 00")}
