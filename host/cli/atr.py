"""`nettx card atr-list`: the card's line for pcsc-tools' ATR list, printed or installed in
the user's list so `pcsc_scan` names the card."""

from __future__ import annotations

from pathlib import Path

import click

from host.cli.kit import CliFail, fails_cleanly
from terminal import smartcard_list

EXAMPLES = """
\b
Examples:
  nettx card atr-list                    # print the entry
  nettx card atr-list --install          # add it to ~/.cache/smartcard_list.txt
  pcsc_scan                              # now says: nettx virtual smart card ...
  nettx card atr-list --survey           # parse every ATR of the system list: counts
"""


@click.command("atr-list", epilog=EXAMPLES)
@click.option("--install", is_flag=True,
              help="Add the entry to the per-user list that pcsc_scan and ATR_analysis read.")
@click.option("--file", "path", type=click.Path(path_type=Path, dir_okay=False),
              help="The list to add to (default: $XDG_CACHE_HOME/smartcard_list.txt, "
                   "else ~/.cache/smartcard_list.txt).")
@click.option("--survey", is_flag=True,
              help="Parse every ATR of the list (--file, default the system list) with the "
                   "card's ATR parser: counts accepted, refused (by reason) and crashed; exit 1 "
                   "on any crash.")
@fails_cleanly
def card_atr_list(install: bool, path: Path | None, survey: bool) -> None:
    """The card's ATRs in pcsc-tools' smartcard_list.txt format.

    pcsc-tools reads only the first list it finds, so a new per-user list starts as a copy
    of the system list (/usr/share/pcsc/smartcard_list.txt) and keeps every other card known.
    """
    if survey:
        source = path or smartcard_list.SYSTEM_LIST
        try:
            atrs = smartcard_list.listed_atrs(source)
        except OSError as exc:
            raise CliFail(f"cannot read {source}: {exc.strerror or exc}") from exc
        result = smartcard_list.survey(atrs)
        click.echo("\n".join(result.lines()))
        if result.crashed:
            raise SystemExit(1)
        return
    if not install:
        click.echo(smartcard_list.entry(), nl=False)
        return
    target = path or smartcard_list.user_list_path()
    if smartcard_list.install(target):
        click.echo(f"added the nettx card to {target}")
    else:
        click.echo(f"{target} already names the nettx card")
