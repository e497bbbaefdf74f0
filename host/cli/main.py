"""The `nettx` command line: `nettx <noun> <verb>`.

Errors are one line on stderr and a non-zero exit: 1 for a refusal (card, centre, reader),
2 for a usage mistake (click's own).
"""

# ruff: noqa: E402 - the secrets leave the environment before any import can start a process

from __future__ import annotations

from host.cli import secretenv

secretenv.take_all()

import logging
import sys
from pathlib import Path

import click

from host.cli import trace as cli_trace
from host.cli.authority import authority
from host.cli.buy import buy
from host.cli.card import card
from host.cli.conformance import conformance
from host.cli.delivery import delivery
from host.cli.demo import demo
from host.cli.examples import add_examples
from host.cli.issuer import issuer
from host.cli.kit import (
    CONTEXT_SETTINGS,
    global_options,
    restrict_umask,
    warn,
)
from host.cli.seller import seller
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


# -- the command groups, one module each, under the root -----------------------------------------

for _command in (authority, card, seller, issuer, delivery, buy, conformance, demo):
    main.add_command(_command)

add_examples(main)


if __name__ == "__main__":
    main()
