"""`nettx authority ...`: the trusted centre's master, rows and personalisation.

What only one command needs (the card session for `personalise`, rich's tables for `list`,
its progress bar for `issue` on a terminal) is imported inside that command: `authority
issue` at large k is timed against its floor (bench/centre.py), and every import is start-up
time each command pays."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from host.centre.authority import (
    ROWS_DIR,
    Authority,
    Master,
    row_file_name,
    write_row_files,
)
from host.cli.cardaccess import current_state_key, open_card
from host.cli.kit import (
    CliFail,
    console,
    err_console,
    fails_cleanly,
    home_option,
    identifier,
    json_option,
    print_json,
    reader_options,
    rich_console,
)
from host.cli.secretopts import PIN, PUK, secret_options


@click.group()
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
    with _progress("issuing rows", len(identifiers)) as advance:
        rows = centre.issue_packed(list(identifiers), advance)
    # all the files or none (and one fsync of the directory, not one per file)
    write_row_files([(paths[ident], ident, row) for ident, row in rows.items()])
    for ident in rows:
        click.echo(f"{ident}: row of k = {centre.master.k} written to {paths[ident]}")


@contextlib.contextmanager
def _progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr if it is a terminal; else nothing (a non-interactive bar
    still writes a blank line, which breaks the output for whatever reads it)."""
    if not err_console.is_terminal:
        yield lambda _n: None
        return
    from rich.progress import Progress

    with Progress(console=rich_console(err_console), transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda n: progress.advance(task, n)


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
    from rich.table import Table
    from rich.text import Text

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
    from host.centre.pairing import Keyring
    from host.centre.personalisation import issue_onto_card
    from terminal.session import CardSession

    centre = Authority(home)
    if reader_spec is None and state is not None and not state.exists():
        centre.manufacture_card(state, current_state_key())
    with open_card(reader_spec, state) as reader:
        pairing = issue_onto_card(centre, CardSession(reader), holder, pin, puk,
                                  keep=Keyring(home).save)
    click.echo(f"card {pairing.serial.hex()} personalised for {holder} "
               f"(k = {centre.master.k}) and locked")
