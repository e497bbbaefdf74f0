"""The `nettx` command line, one module per command group; `python -m host.cli` runs it."""
