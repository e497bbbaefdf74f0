"""`nettx card ...`: make the virtual card, serve it, and talk to it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from card_applet.serve import parse_endpoint, serve_until_signalled
from card_applet.state import FileStore
from host.centre.authority import Authority
from host.centre.pairing import CardExpectation, authenticated_session
from host.cli import trace as cli_trace
from host.cli.apdu import card_apdu
from host.cli.atr import card_atr_list
from host.cli.cardaccess import current_state_key, open_card, state_key_options
from host.cli.kit import (
    card_auth_options,
    console,
    fails_cleanly,
    home_option,
    identifier,
    json_option,
    print_json,
    reader_options,
    state_option,
)
from host.cli.secretopts import NEW_PIN, PIN, PUK, secret_options
from terminal.session import CardInfo, CardSession


@click.group()
def card() -> None:
    """The virtual card: make it, serve it, talk to it."""


@card.command("new")
@home_option
@state_option(required=True, help="Where to write the new card's EEPROM file.")
@state_key_options
@fails_cleanly
def card_new(home: Path, state: Path) -> None:
    """Manufacture a blank card (serial + transport key from the centre) into STATE;
    sealed at rest if a state key is given."""
    key = current_state_key()
    serial = Authority(home).manufacture_card(state, key)
    click.echo(f"blank card {serial.hex()} written to {state}{' (sealed)' if key else ''}")


@card.command("seal")
@state_option(required=True, must_exist=True, help="The card's EEPROM file.")
@state_key_options
@fails_cleanly
def card_seal(state: Path) -> None:
    """Seal an existing plain card state under the state key (AES-256-GCM at rest)."""
    key = current_state_key()
    if key is None:
        raise click.UsageError("give the key: --state-key-file PATH or --state-key-fd N")
    with FileStore(state) as store:  # holds the card's lock: no card process is using it
        card_state = store.load()
        store.key = key
        store.commit(card_state)
    click.echo(f"card state {state} sealed")


@card.command("serve")
@home_option
@state_option(required=True, help="The card's EEPROM file; a blank card is manufactured "
                                 "if it does not exist.")
@click.option("--vpcd", default="127.0.0.1:35963", show_default=True,
              help="The reader to connect to: pcscd's vpcd driver or an embedded reader.")
@click.option("--listen", metavar="HOST:PORT",
              help="Loopback mode: listen here and let vpcd connect out to the card "
                   "(reader.conf DEVICENAME HOST:PORT; see vpcd_config/).")
@click.option("--serial", "serial_device", metavar="DEVICE",
              help="Serve on a serial line instead (ISO 7816-3 ATR, PPS, T=1): a UART, a pty "
                   "or a pyserial URL; reset is in-band (docs/serial.md).")
@click.option("--protocol", "serial_protocol", type=click.Choice(["t1", "both", "t0"]),
              default=None,
              help="With --serial: the protocols the ATR offers: t1 (default), both (T=0 "
                   "first, T=1 by PPS) or t0 (T=0 only).")
@click.option("--tear-after-writes", type=int, hidden=True)
@click.option("--trace", "trace_log", is_flag=True,
              help="Log every command the card receives and its answer, secrets redacted "
                   "(the same as `nettx --trace card serve`; the top-level --trace-file "
                   "and --trace-full apply).")
@click.option("--trace-pcap", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Record every exchange in FILE, a pcap Wireshark decodes (GSMTAP SIM); "
                   "secret data is zeroed unless --trace-secrets.")
@state_key_options
@fails_cleanly
def card_serve(home: Path, state: Path, vpcd: str, listen: str | None,
               serial_device: str | None, serial_protocol: str | None,
               tear_after_writes: int | None, trace_log: bool, trace_pcap: Path | None) -> None:
    """Serve the card to a vpcd reader (reconnecting whenever it goes away), or on a serial
    line with --serial."""
    if serial_device and listen:
        raise click.UsageError("--serial and --listen exclude each other")
    if serial_protocol and not serial_device:
        raise click.UsageError("--protocol works only with --serial")
    try:
        host, port = parse_endpoint(listen or vpcd)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen" if listen else "--vpcd") from exc
    card_trace = cli_trace.card_trace(click.get_current_context(), log=trace_log,
                                      pcap=trace_pcap)
    key = current_state_key()
    if not state.exists():
        Authority(home).manufacture_card(state, key)
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    if serial_device:
        from card_applet.serve import serve_serial_until_signalled

        serve_serial_until_signalled(state, serial_device, tear_after_writes=tear_after_writes,
                                     key=key, trace=card_trace,
                                     protocol=serial_protocol or "t1")
        return
    serve_until_signalled(state, host, port, listen=listen is not None,
                          tear_after_writes=tear_after_writes, key=key, trace=card_trace)


def _info_table(info: CardInfo) -> Table:
    table = Table("field", "value", title="card")
    table.add_row("serial", info.serial.hex())
    table.add_row("lifecycle", info.lifecycle.name.lower())
    table.add_row("holder", Text(info.holder_id or "-"))
    table.add_row("applet version", f"{info.version[0]}.{info.version[1]}")
    table.add_row("scheme", f"Blom v{info.scheme_version}, GF(2^255-19), k = {info.k}")
    table.add_row("PIN tries", f"{info.pin_tries}/{info.pin_max}")
    table.add_row("PUK tries", f"{info.puk_tries}/{info.puk_max}")
    table.add_row("transaction counter", str(info.atc))
    return table


def info_json(atr: bytes, info: CardInfo) -> dict[str, object]:
    return {"atr": atr.hex().upper(), "serial": info.serial.hex(),
            "lifecycle": info.lifecycle.name.lower(), "holder": info.holder_id,
            "applet_version": f"{info.version[0]}.{info.version[1]}",
            "scheme_version": info.scheme_version, "k": info.k,
            "pin_tries": info.pin_tries, "pin_max": info.pin_max,
            "puk_tries": info.puk_tries, "puk_max": info.puk_max, "atc": info.atc}


@card.command("info")
@reader_options
@json_option
@fails_cleanly
def card_info(reader_spec: str | None, state: Path | None, as_json: bool) -> None:
    """SELECT the applet and show its public data (never the row: no command reads it)."""
    with open_card(reader_spec, state) as reader:
        atr = reader.power_on()
        info = CardSession(reader).select()
    if as_json:
        print_json(info_json(atr, info))
        return
    console.print(f"ATR {atr.hex(' ').upper()}")
    console.print(_info_table(info))


@contextlib.contextmanager
def peer_session(reader_spec: str | None, state: Path | None, card: CardExpectation, pin: str,
                 peer: str) -> Iterator[CardSession]:
    """The card, once it has proved it is the expected one, with its PIN verified and PEER's
    pair key selected."""
    with open_card(reader_spec, state) as reader:
        session = authenticated_session(reader, card)
        session.verify_pin(pin)
        session.set_peer(peer)
        yield session


def _read_input(text: str | None, path: Path | None) -> bytes:
    if (text is None) == (path is None):
        raise click.UsageError("give exactly one of --text or --in")
    return text.encode() if text is not None else path.read_bytes()  # type: ignore[union-attr]


def _write_output(data: bytes, out: Path | None, as_hex: bool) -> None:
    if out is not None:
        out.write_bytes(data)
    else:
        click.echo(data.hex() if as_hex else data.decode("utf-8", "backslashreplace"))


@card.command("encrypt")
@reader_options
@card_auth_options
@secret_options(PIN)
@click.option("--peer", required=True, callback=identifier, help="Receiver's identifier.")
@click.option("--text", help="Plaintext as a string.")
@click.option("--in", "in_path", type=click.Path(exists=True, path_type=Path))
@click.option("--aad", default="", help="Associated data (authenticated, not encrypted).")
@click.option("--context", default="", help="Key-derivation context, e.g. an order id.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the sealed box here.")
@fails_cleanly
def card_encrypt(reader_spec: str | None, state: Path | None, card: CardExpectation, pin: str,
                 peer: str,
                 text: str | None, in_path: Path | None, aad: str, context: str,
                 out: Path | None) -> None:
    """Seal data for PEER on the card (AES-256-GCM under a key derived from the pair key).
    The PIN: NETTX_PIN, --pin-file, --pin-fd, or a hidden prompt."""
    plaintext = _read_input(text, in_path)
    with peer_session(reader_spec, state, card, pin, peer) as session:
        sealed = session.encrypt(plaintext, aad.encode(), context.encode())
    _write_output(sealed, out, as_hex=True)


@card.command("decrypt")
@reader_options
@card_auth_options
@secret_options(PIN)
@click.option("--peer", required=True, callback=identifier, help="Sender's identifier.")
@click.option("--hex", "hex_in", help="Sealed box as hex.")
@click.option("--in", "in_path", type=click.Path(exists=True, path_type=Path))
@click.option("--aad", default="")
@click.option("--context", default="")
@click.option("--out", type=click.Path(path_type=Path))
@fails_cleanly
def card_decrypt(reader_spec: str | None, state: Path | None, card: CardExpectation, pin: str,
                 peer: str,
                 hex_in: str | None, in_path: Path | None, aad: str, context: str,
                 out: Path | None) -> None:
    """Open a box PEER sealed for this card. The PIN: NETTX_PIN, --pin-file, --pin-fd, or a
    hidden prompt."""
    if (hex_in is None) == (in_path is None):
        raise click.UsageError("give exactly one of --hex or --in")
    try:
        sealed = bytes.fromhex(hex_in) if hex_in is not None else in_path.read_bytes()  # type: ignore[union-attr]
    except ValueError as exc:
        raise click.BadParameter("not hex", param_hint="--hex") from exc
    with peer_session(reader_spec, state, card, pin, peer) as session:
        plaintext = session.decrypt(sealed, aad.encode(), context.encode())
    _write_output(plaintext, out, as_hex=False)


@card.command("change-pin")
@reader_options
@card_auth_options
@secret_options(dataclasses.replace(PIN, legacy=("--old",)),
                dataclasses.replace(NEW_PIN, legacy=("--new",)))
@fails_cleanly
def card_change_pin(reader_spec: str | None, state: Path | None, card: CardExpectation,
                    pin: str, new_pin: str) -> None:
    """CHANGE REFERENCE DATA: replace the PIN (the old one counts as a try).

    The current PIN: NETTX_PIN, --pin-file, --pin-fd or a hidden prompt; the new one:
    NETTX_NEW_PIN, --new-pin-file, --new-pin-fd or a hidden prompt, asked twice."""
    with open_card(reader_spec, state) as reader:
        session = authenticated_session(reader, card)
        session.change_pin(pin, new_pin)
    console.print("PIN changed")


@card.command("unblock")
@reader_options
@card_auth_options
@secret_options(PUK, dataclasses.replace(NEW_PIN, optional=True, legacy=("--new-pin",)))
@fails_cleanly
def card_unblock(reader_spec: str | None, state: Path | None, card: CardExpectation,
                 puk: str, new_pin: str | None) -> None:
    """RESET RETRY COUNTER with the PUK, and set a new PIN if one is given.

    The PUK: NETTX_PUK, --puk-file, --puk-fd or a hidden prompt. A new PIN: NETTX_NEW_PIN,
    --new-pin-file, --new-pin-fd, or --ask-new-pin (a hidden prompt, asked twice)."""
    with open_card(reader_spec, state) as reader:
        session = authenticated_session(reader, card)
        session.unblock_pin(puk, new_pin)
    console.print("PIN unblocked")


# subcommands with modules of their own
card.add_command(card_apdu)
card.add_command(card_atr_list)
