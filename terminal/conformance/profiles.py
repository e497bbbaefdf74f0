"""Known cards' facts, so `nettx conformance` needs no options for our own card."""

from __future__ import annotations

from card_applet.apdu import CommandApdu
from card_applet.tlv import tlv
from card_applet.vocabulary import AID, PIN_REFERENCE, TAG_PLAIN, Ins, KeyReference, Pso
from terminal.conformance.probe import PinFormat, Target

# PSO ENCIPHER needs the PIN before anything else (docs/apdu.md 3.7): 6982 before VERIFY,
# 6985 (no peer set) after it
NETTX_PROTECTED = CommandApdu(0x00, Ins.PERFORM_SECURITY_OPERATION, Pso.ENCIPHER >> 8,
                              Pso.ENCIPHER & 0xFF, tlv(TAG_PLAIN, b"abc"), 256).to_bytes()

NETTX = Target(aid=AID, pin_reference=PIN_REFERENCE, pin_format=PinFormat.ASCII_FF,
               protected=NETTX_PROTECTED, auth_key_reference=KeyReference.CARD_AUTH)
