"""The `nettx` command line: `nettx <noun> <verb>`.

Errors are one line on stderr and a non-zero exit: 1 for a refusal (card, centre, reader),
2 for a usage mistake (click's own).
"""

# ruff: noqa: E402 - the secrets leave the environment before any import can start a process

from __future__ import annotations

from host.cli import secretenv

secretenv.take_all()

import dataclasses
import logging
import sys
from pathlib import Path

import click
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from card_applet.serve import parse_endpoint, serve_until_signalled
from card_applet.state import FileStore
from host.centre.authority import ROWS_DIR, Authority, Master, row_file_name, write_row_file
from host.centre.pairing import CardExpectation, Keyring, authenticated_session
from host.centre.personalisation import issue_onto_card
from host.cli import trace as cli_trace
from host.cli.cardaccess import current_state_key, open_card, state_key_options
from host.cli.kit import (
    CONTEXT_SETTINGS,
    NEW_PIN,
    PIN,
    PUK,
    CliFail,
    card_auth_options,
    console,
    err_console,
    fails_cleanly,
    global_options,
    global_value,
    home_option,
    identifier,
    json_option,
    print_json,
    reader_options,
    restrict_umask,
    secret_options,
    secure_home,
    state_option,
    warn,
)
from host.cli.transaction import buy, delivery, issuer, seller
from terminal.session import CardInfo, CardSession
from terminal.trace import TRAFFIC, show_secrets


@click.group(context_settings=CONTEXT_SETTINGS)
@global_options
@click.option("--trace", is_flag=True,
              help="Log every APDU and its status word to stderr. PINs, keys, rows and order "
                   "plaintext are redacted (only their length is shown).")
@click.option("--trace-secrets", is_flag=True,
              help="Trace (implies --trace) with the secrets in it: PINs, PUK, card number, "
                   "destination, rows. For debugging with throw-away data only.")
@click.option("--trace-full", is_flag=True,
              help="Trace (implies --trace) with all of the data, not its first 64 bytes; "
                   "secrets stay redacted.")
@click.option("--trace-file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Trace (implies --trace) to FILE instead of stderr: appended to, created "
                   "0600; a symbolic link is refused.")
@click.option("--trace-pcap", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Record every command/response exchange in FILE, a pcap Wireshark decodes "
                   "(GSMTAP SIM); secret data is zeroed unless --trace-secrets.")
@click.option("-v", "--verbose", is_flag=True, help="Log what the parties do.")
@click.version_option(package_name="nettx")
def main(global_home: Path | None, global_reader: str | None, global_state: Path | None,
         trace: bool, trace_secrets: bool, trace_full: bool, trace_file: Path | None,
         trace_pcap: Path | None, verbose: bool) -> None:
    """nettx: a virtual smart card holding a Blom/KPS key row (EP 0791901), its readers,
    and the trusted centre that issues rows and personalises cards.

    Secrets (PIN, PUK, new PIN, card number) are never command-line arguments: each comes
    from --X-file PATH, --X-fd N, the environment (NETTX_PIN, NETTX_PUK, NETTX_NEW_PIN,
    NETTX_CARD_NUMBER), or a hidden prompt on a terminal. Files are written 0600 in a 0700
    home."""
    restrict_umask()
    secretenv.take_all()  # CliRunner sets them after the import
    click.get_current_context().call_on_close(secretenv.forget)
    show_secrets(trace_secrets)
    if trace_secrets:
        warn("--trace-secrets: the trace shows PINs, card numbers, order plaintext and keys")
    trace = trace or (trace_full and trace_file is None)
    level = TRAFFIC if trace or trace_secrets else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    cli_trace.start(click.get_current_context(), full=trace_full, file=trace_file,
                    pcap=trace_pcap)


# -- authority --------------------------------------------------------------------------------


@main.group()
def authority() -> None:
    """The trusted centre: master matrix, rows, personalisation."""


@authority.command("init")
@home_option
@click.option("--k", "k", type=click.IntRange(1, 4096), default=512, show_default=True,
              help="Collusion threshold: k pooled rows rebuild the master.")
@click.option("--master", "master_file", type=click.Path(exists=True, path_type=Path),
              help="Import a master (vectors format: master_upper_triangle_hex).")
@click.option("--force", is_flag=True, help="Replace an existing centre.")
@fails_cleanly
def authority_init(home: Path, k: int, master_file: Path | None, force: bool) -> None:
    """Create the centre's master matrix and master transport key (files mode 0600)."""
    master = Master.from_file(master_file) if master_file is not None else None
    with console.status("generating the master matrix"):
        master = Authority(home).init(k, master, force)
    click.echo(f"centre initialised in {home / 'authority'}: k = {master.k}")


@authority.command("issue")
@home_option
@click.argument("identifiers", nargs=-1, required=True, callback=identifier)
@click.option("--out", type=click.Path(path_type=Path),
              help="Directory for the row files (default HOME/rows).")
@fails_cleanly
def authority_issue(home: Path, identifiers: tuple[str, ...], out: Path | None) -> None:
    """Issue rows for IDENTIFIERS (one matrix product per batch) into row files."""
    centre = Authority(home)
    centre.check_new(identifiers)  # "already issued" says where the row went: ask it first
    out = out or home / ROWS_DIR
    paths = {i: out / row_file_name(i) for i in identifiers}
    # two identifiers can share a file name ("seller:a", "seller_a"): refuse before issuing
    # rather than let one row overwrite another
    seen: set[Path] = set()
    for path in paths.values():
        if path.exists() or path in seen:
            raise CliFail(f"row file {path} exists or is shared by two identifiers")
        seen.add(path)
    # no progress bar unless stderr is a terminal: a non-interactive one still writes a
    # blank line, which breaks the output for whatever reads it
    with Progress(console=err_console, transient=True,
                  disable=not err_console.is_terminal) as progress:
        task = progress.add_task("issuing rows", total=len(identifiers))
        rows = centre.issue(list(identifiers), lambda n: progress.advance(task, n))
    for ident, row in rows.items():
        write_row_file(paths[ident], ident, row)
        click.echo(f"{ident}: row of k = {len(row)} written to {paths[ident]}")


@authority.command("pair-key")
@home_option
@click.argument("id_a", callback=identifier)
@click.argument("id_b", callback=identifier)
@fails_cleanly
def authority_pair_key(home: Path, id_a: str, id_b: str) -> None:
    """Print the 64-hex pair key K(ID_A, ID_B) as the centre computes it."""
    click.echo(Authority(home).pair_key(id_a, id_b).hex())


@authority.command("list")
@home_option
@json_option
@fails_cleanly
def authority_list(home: Path, as_json: bool) -> None:
    """List every identifier the centre has issued."""
    registered = Authority(home).registered()
    if as_json:
        print_json({"identifiers": [{"identifier": ident, "x": x, "card_serial": serial,
                                     "issued_at": at}
                                    for ident, x, serial, at in registered]})
        return
    table = Table("identifier", "x (first 16 hex)", "card serial")
    for ident, x, serial, _at in registered:
        table.add_row(Text(ident), x[:16], serial or "-")  # Text: no markup, no :emoji:
    console.print(table)


@authority.command("personalise")
@home_option
@reader_options
@click.option("--holder", required=True, callback=identifier, help="Holder identifier.")
@secret_options(dataclasses.replace(PIN, confirm=True), dataclasses.replace(PUK, confirm=True))
@fails_cleanly
def authority_personalise(home: Path, reader_spec: str | None, state: Path | None, holder: str,
                          pin: str, puk: str) -> None:
    """Issue HOLDER's row straight onto a blank card, with PIN, PUK (4..8 digits each) and a
    card authentication key, and lock it. The key's pairing file goes to
    HOME/cards/SERIAL.pairing.json: commands that send the card a secret check it first.
    The PIN and PUK come from NETTX_PIN / NETTX_PUK, --pin-file / --puk-file, --pin-fd /
    --puk-fd, or are asked twice at a hidden prompt."""
    centre = Authority(home)
    if reader_spec is None and state is not None and not state.exists():
        centre.manufacture_card(state, current_state_key())
    with open_card(reader_spec, state) as reader:
        pairing = issue_onto_card(centre, CardSession(reader), holder, pin, puk,
                                  keep=Keyring(home).save)
    click.echo(f"card {pairing.serial.hex()} personalised for {holder} "
               f"(k = {centre.master.k}) and locked")


# -- card -------------------------------------------------------------------------------------


@main.group()
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
    with open_card(reader_spec, state) as reader:
        session = authenticated_session(reader, card)
        session.verify_pin(pin)
        session.set_peer(peer)
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
    with open_card(reader_spec, state) as reader:
        session = authenticated_session(reader, card)
        session.verify_pin(pin)
        session.set_peer(peer)
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


# -- demo -------------------------------------------------------------------------------------


def _demo_home(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    value = value or global_value(ctx, "home")
    return None if value is None else secure_home(value)


@main.command()
@click.option("--home", type=click.Path(path_type=Path), callback=_demo_home,
              help="Keep the demo's files here (default: a temporary directory); kept 0700, "
                   "every file 0600.")
@click.option("--k", "k", type=click.IntRange(2, 4096), default=512, show_default=True)
@fails_cleanly
def demo(home: Path | None, k: int) -> None:
    """Personalise a virtual card on the embedded reader and use it, printing each step."""
    from rich.console import Console

    from host.cli.demo import run_demo

    # a narration, not a result: laid out for a terminal's width even through a pipe (the
    # whole-width console would draw its rules 10 000 columns long)
    run_demo(Console(), home, k)

# commands with modules of their own, added to the groups above
from host.cli.apdu import card_apdu
from host.cli.atr import card_atr_list
from host.cli.conformance import conformance
from host.cli.examples import add_examples

card.add_command(card_apdu)
card.add_command(card_atr_list)

main.add_command(conformance)

for _command in (seller, issuer, delivery, buy):
    main.add_command(_command)

add_examples(main)


if __name__ == "__main__":
    main()
