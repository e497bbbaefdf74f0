"""The transaction fixtures (a centre, a holder's card, the three parties in-process), shared
by the modules that drive orders."""

from tests.host.test_transaction import (  # noqa: F401 - fixtures, found by name
    centre,
    holder_card,
    make_market,
    market,
)
