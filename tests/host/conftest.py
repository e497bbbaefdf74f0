"""The transaction fixtures (a centre, a holder's card, the three parties in-process), shared
by the modules that drive orders; and `restore_process_state` for modules that run the CLI in
this process."""

import logging
import os
from collections.abc import Iterator

import pytest

from tests.host.test_transaction import (  # noqa: F401 - fixtures, found by name
    centre,
    holder_card,
    make_market,
    market,
    party_engine,
)


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """`nettx`'s main sets up logging and a 077 umask; an in-process run (CliRunner) must not
    leave either behind for the next test."""
    root = logging.getLogger()
    handlers, level, umask = root.handlers[:], root.level, os.umask(0o077)
    os.umask(umask)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    os.umask(umask)


# the CLI modules' centre home and personalised card (tests/host/cli_helpers.py)
from tests.host.cli_helpers import card, home  # noqa: E402, F401 - fixtures, found by name
