"""`--db postgresql://...` on the command line: the card manager's accounts kept and listed on
PostgreSQL, and a database that cannot be used refused in one line."""

from __future__ import annotations

import json

import psycopg
from click.testing import Result

from tests.host.cli_helpers import assert_one_error_line, nettx, ok
from tests.pg import PostgresServer, free_port

CARD = {"NETTX_CARD_NUMBER": "4970101234567890"}


def add_account(db: str, balance: int = 100) -> Result:
    return nettx("issuer", "add-account", "--db", db, "--expiry", "09/29", "--holder",
                 "holder:alice@example.org", "--name", "Alice", "--balance", str(balance),
                 env=CARD)


def test_accounts_on_postgresql(pg_url: str, restore_process_state: None) -> None:
    ok(add_account(pg_url))
    ok(add_account(pg_url, balance=250))  # replaced, not added
    doc = json.loads(ok(nettx("issuer", "accounts", "--db", pg_url, "--json")))
    assert [(a["card"][-4:], a["balance"]) for a in doc["accounts"]] == [("7890", 250)]


def test_an_unreachable_database_is_one_line(restore_process_state: None) -> None:
    line = assert_one_error_line(
        nettx("issuer", "accounts", "--db", f"postgresql://nettx@127.0.0.1:{free_port()}/x"))
    assert "cannot connect" in line


def test_a_url_with_a_password_is_not_echoed(restore_process_state: None) -> None:
    line = assert_one_error_line(
        nettx("issuer", "accounts", "--db", "postgresql://nettx:s3cret@127.0.0.1:bad/x"))
    assert "s3cret" not in line


def test_a_newer_schema_is_refused_in_one_line(pg_url: str, postgres: PostgresServer,
                                               restore_process_state: None) -> None:
    ok(add_account(pg_url))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE nettx_ledger.schema_version SET version = 99")
    line = assert_one_error_line(nettx("issuer", "accounts", "--db", pg_url))
    assert "version 99" in line and "upgrade nettx" in line
