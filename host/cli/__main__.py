"""`python -m host.cli`: the same as the `nettx` command."""

from host.cli.main import main

main()
