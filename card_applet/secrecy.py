"""Which APDUs carry secrets, exchange by exchange: what both traces (terminal and card) and
every record of exchanges (pcap, conformance reports) redact by.

Which commands carry secrets is the vocabulary's table (`Ins.secret`, card_applet/
vocabulary.py): PIN and PUK blocks (VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER), an
order's plaintext (PERFORM SECURITY OPERATION, both directions, so which is which never
depends on P1-P2 being well formed), challenges and cryptograms under pair keys and the card
authentication key (EXTERNAL, INTERNAL and GENERAL AUTHENTICATE), and the personalisation
objects (INITIALIZE UPDATE, STORE DATA, SET STATUS, proprietary class). The card and the
terminal each decide from the command alone, so they agree without talking about it; a
command's data, and the data of its response, are secret together.

A GET RESPONSE carries the rest of an earlier response, so its secrecy is that of the command
whose answer started the 61xx chain. Not simply of the previous command: the applet keeps a
pending response across a command refused at its class or length check (docs/apdu.md 1.8),
so `DECIPHER, FF 00 00 00, GET RESPONSE` still fetches the plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass

from card_applet.apdu import CommandApdu, ResponseApdu
from card_applet.vocabulary import Ins, is_proprietary, is_secret_command


def is_secret(cmd: CommandApdu) -> bool:
    """Whether the command's data (and its response's) is a secret."""
    return is_secret_command(cmd.cla, cmd.ins)


_GET_RESPONSE = Ins.GET_RESPONSE.value


def is_get_response(cmd: CommandApdu) -> bool:
    # GET RESPONSE is inter-industry (ISO 7816-4 11.4.1): 80 C0 is some other command
    return cmd.ins == _GET_RESPONSE and not is_proprietary(cmd.cla)


@dataclass(frozen=True, slots=True)
class Redaction:
    """What to hide of one exchange."""

    command: bool  # the command's data
    response: bool  # the response's data


class Secrecy:
    """Follows one card channel (a reader, or the card's side of it) exchange by exchange:
    `command` before the card answers, `response` after, in strict alternation."""

    def __init__(self) -> None:
        self.reset()

    def command(self, cmd: CommandApdu) -> bool:
        """Whether `cmd`'s data is secret; remembers what its response will be."""
        self._fetching = is_get_response(cmd)
        self._command_secret = is_secret(cmd)
        return self._command_secret

    def response(self, resp: ResponseApdu) -> Redaction:
        """What to hide of the exchange just answered by `resp`."""
        if self._fetching:
            return Redaction(self._command_secret, self._pending_secret)
        if resp.sw1 == 0x61:  # this command's answer continues through GET RESPONSE
            self._pending_secret = self._command_secret
        return Redaction(self._command_secret, self._command_secret)

    def reset(self) -> None:
        """The card was reset or powered off (or is new): nothing is pending any more."""
        self._command_secret = False
        self._fetching = False  # the current command is a GET RESPONSE
        self._pending_secret = False  # the data still waiting behind the last 61xx

    def lose_track(self) -> None:
        """Exchanges went by unseen (a trace switched off for a while): until a command
        answered 61xx says again what is pending, whatever a GET RESPONSE fetches is
        treated as secret, and so is the answer to a command not seen."""
        self._command_secret = True
        self._fetching = False
        self._pending_secret = True
