"""host.storage is a layer below the parties and beside the protocol: it imports neither, so a
second engine can be added, and the stores changed, without touching what runs on them."""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from pathlib import Path

import host.storage
from host.storage.engine import open_ledger, open_order_book, open_shipments
from host.storage.ledger import LedgerStore
from host.storage.order_book import OrderStore
from host.storage.shipments import ShipmentStore

# the PostgreSQL driver and its pool: the engine's own, nothing of the parties
ALLOWED = ("host.errors", "host.storage", "terminal.errors", "psycopg", "psycopg_pool")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            found.add(node.module or "")
    return found


def test_storage_imports_only_the_errors_and_the_standard_library() -> None:
    modules = sorted(Path(host.storage.__file__).parent.glob("*.py"))
    assert len(modules) >= 5
    for path in modules:
        for name in imports(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top == "__future__" \
                or any(name == a or name.startswith(a + ".") for a in ALLOWED), \
                f"{path.name} imports {name}"


def test_the_stores_a_party_opens_offer_their_protocols(
        store_engine: Callable[[str], Path | str]) -> None:
    stores = [(open_ledger(store_engine("ledger")), LedgerStore),
              (open_order_book(store_engine("orders")), OrderStore),
              (open_shipments(store_engine("shipments")), ShipmentStore)]
    for store, protocol in stores:
        try:
            assert isinstance(store, protocol)
            # every public method is the protocol's: the parties need nothing else
            public = {name for name in dir(type(store)) if not name.startswith("_")}
            assert public - {"db", "decline_window"} <= set(dir(protocol))
        finally:
            store.close()
