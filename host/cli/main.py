"""The `nettx` command line: `nettx <noun> <verb>`.

Errors are one line on stderr and a non-zero exit: 1 for a refusal (card, centre, reader),
2 for a usage mistake (click's own).
"""

# ruff: noqa: E402 - the secrets leave the environment before any import can start a process

from __future__ import annotations

from host.cli import secretenv

secretenv.take_all()

import importlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path

import click

from host.cli.examples import EXAMPLES, epilog, leaf_commands
from host.cli.kit import (
    CONTEXT_SETTINGS,
    global_options,
    restrict_umask,
    warn,
)


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
    trace = trace or (trace_full and trace_file is None)
    level = logging.INFO if verbose else logging.WARNING
    # the trace modules load only for a traced command; once loaded (an earlier command in
    # this process), their switches are set again for this one
    tracing = (trace or trace_secrets or trace_file is not None or trace_pcap is not None
               or "terminal.trace" in sys.modules)
    if tracing:
        from host.cli import trace as cli_trace
        from terminal.trace import TRAFFIC, show_secrets

        show_secrets(trace_secrets)
        if trace or trace_secrets:
            level = TRAFFIC
    if trace_secrets:
        warn("--trace-secrets: the trace shows PINs, card numbers, order plaintext and keys")
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    if tracing:
        cli_trace.start(click.get_current_context(), full=trace_full, file=trace_file,
                        pcap=trace_pcap)


# -- the command groups, one module each, under the root -----------------------------------------
#
# Each group's module is imported when that command runs (or when a help lists it), not at
# start: `nettx authority issue` never loads the card readers, the parties' event loop, CBOR
# or the database drivers, and starts in a fraction of the time. click's own lazy-loading
# pattern overrides get_command; `commands` as a mapping that loads on access serves that and
# also everything that walks `main.commands` (the examples, the tests).

GROUPS = {
    "authority": "host.cli.authority",
    "card": "host.cli.card",
    "seller": "host.cli.seller",
    "issuer": "host.cli.issuer",
    "delivery": "host.cli.delivery",
    "buy": "host.cli.buy",
    "conformance": "host.cli.conformance",
    "demo": "host.cli.demo",
}


def _with_examples(name: str, command: click.Command) -> click.Command:
    """Give each command without an epilog of its own its Examples (host/cli/examples.py)."""
    leaves = (leaf_commands(command, (name,)) if isinstance(command, click.Group)
              else [((name,), command)])
    for path, leaf in leaves:
        if not leaf.epilog and path in EXAMPLES:
            leaf.epilog = epilog(EXAMPLES[path])
    return command


class LazyCommands(MutableMapping[str, click.Command]):
    """The root's subcommands: NAME -> the attribute NAME of module GROUPS[NAME], imported
    the first time the command is looked up."""

    def __init__(self, modules: dict[str, str]) -> None:
        self._modules = modules
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            if name not in self._modules:
                raise KeyError(name)
            module = importlib.import_module(self._modules[name])
            self._loaded[name] = _with_examples(name, getattr(module, name))
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._modules.pop(name, None)
        del self._loaded[name]

    def __contains__(self, name: object) -> bool:  # without importing
        return name in self._loaded or name in self._modules

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._modules.keys() | self._loaded.keys()))

    def __len__(self) -> int:
        return len(self._modules.keys() | self._loaded.keys())


main.commands = LazyCommands(dict(GROUPS))


if __name__ == "__main__":
    main()
