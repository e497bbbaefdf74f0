"""What the PostgreSQL engine adds to what both engines share: a versioned schema migrated on
start (and a newer one refused), decisions from several instances at once serialised by the
database (no double debit, no overdraft, one decision per order), and a server that goes away
and comes back (told `internal` meanwhile, reconnected after, nothing acknowledged lost)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

import psycopg
import pytest
from psycopg import errors

from host.errors import TransactionError
from host.storage.base import SchemaTooNew, Seen, StorageFull, StorageLost, StorageUnavailable
from host.storage.ledger import LEDGER, Account, AuthorisationRequest, Decision, Facts, Ledger
from host.storage.order_book import OrderBook
from host.storage.postgresql import Database, storage_fault
from tests.host.stores import decided
from tests.host.test_ledger import ACCOUNT, CARD, HOLDER, REQUEST
from tests.pg import PostgresServer

AMOUNT = 1_000


def funded(request: AuthorisationRequest, facts: Facts) -> Decision:
    """Approve while the account covers the amount: the rule a double spend would break."""
    assert request.amount is not None
    if facts.account is not None and facts.account.balance >= request.amount:
        return Decision("approved", "approved", request.amount, request.digest,
                        card_number=facts.account.card_number)
    return Decision("declined", "insufficient funds", request.amount, request.digest,
                    card_number=request.card_number)


def order(n: int) -> AuthorisationRequest:
    return replace(REQUEST, order_id=n.to_bytes(16, "big"), atc=n, amount=AMOUNT,
                   request_digest=n.to_bytes(32, "big"))


def in_threads(count: int, work: Callable[[int], None]) -> None:
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures


# -- the schema -----------------------------------------------------------------------------------


def test_the_schema_is_versioned_and_a_newer_one_refused(pg_url: str) -> None:
    # several instances starting at once: one migrates, the others find it done
    opened: list[Ledger] = []
    in_threads(4, lambda _i: opened.append(Ledger(pg_url)))
    for ledger in opened:
        assert isinstance(ledger.db, Database) and ledger.db.version == len(LEDGER.postgresql)
        ledger.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE nettx_ledger.schema_version SET version = version + 1")
    with pytest.raises(SchemaTooNew) as refused:
        Ledger(pg_url)
    message = str(refused.value)
    assert "\n" not in message and "upgrade nettx" in message
    assert f"version {len(LEDGER.postgresql) + 1}" in message


def test_stores_of_several_parties_share_a_database(pg_url: str) -> None:
    """Each store in its own schema: the card manager's and the seller's views do not mix."""
    ledger, book = Ledger(pg_url), OrderBook(pg_url)
    try:
        ledger.add_account(ACCOUNT)
        decided(ledger.authorise(order(1), funded))
        decided(book.receive(order(1).order_id, b"e", HOLDER, AMOUNT, bytes(32), ["amount"]))
        assert ledger.debits(order(1).order_id) == 1
        assert [r.order_id for r in book.unfinished()] == [order(1).order_id]
    finally:
        ledger.close()
        book.close()


def test_the_database_refuses_what_the_code_must_never_write(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    try:
        ledger.add_account(ACCOUNT)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            with pytest.raises(errors.CheckViolation):
                conn.execute("UPDATE nettx_ledger.accounts SET balance = -1")
            with pytest.raises(errors.CheckViolation):
                conn.execute("INSERT INTO nettx_ledger.authorisations VALUES "
                             "('\\x00', '\\x00', 's', NULL, 0, '\\x00', 'maybe', '', 0)")
    finally:
        ledger.close()


# -- several instances at once --------------------------------------------------------------------


def test_instances_racing_on_one_account_never_overdraw_it(pg_url: str) -> None:
    """Twenty orders from four instances against funds for seven: seven debits, whatever the
    interleaving; the losers of each race retried, and declined on the balance they then saw."""
    instances = [Ledger(pg_url) for _ in range(4)]
    try:
        instances[0].add_account(replace(ACCOUNT, balance=7 * AMOUNT + 500))
        codes: dict[int, str] = {}

        def buy(i: int) -> None:
            for n in range(i, 20, 4):
                decision, seen = decided(instances[i].authorise(order(n), funded))
                assert seen is Seen.NEW
                codes[n] = decision.code

        in_threads(4, buy)
        assert sorted(codes) == list(range(20))
        assert list(codes.values()).count("approved") == 7
        assert instances[1].account(CARD).balance == 500  # type: ignore[union-attr]
        assert sum(instances[2].debits(order(n).order_id) for n in range(20)) == 7
    finally:
        for ledger in instances:
            ledger.close()


def test_one_order_sent_to_every_instance_is_decided_once(pg_url: str) -> None:
    instances = [Ledger(pg_url) for _ in range(4)]
    try:
        instances[0].add_account(ACCOUNT)
        seen: list[Seen] = []
        in_threads(4, lambda i: seen.append(decided(instances[i].authorise(order(1), funded))[1]))
        assert seen.count(Seen.NEW) == 1 and seen.count(Seen.RETRANSMISSION) == 3
        assert instances[0].debits(order(1).order_id) == 1
        assert instances[0].account(CARD).balance == ACCOUNT.balance - AMOUNT  # type: ignore
        # and a replay (the same order id, another request) is refused by every instance
        for ledger in instances:
            with pytest.raises(TransactionError, match="replay"):
                decided(ledger.authorise(replace(order(1), request_digest=b"x" * 32), funded))
    finally:
        for ledger in instances:
            ledger.close()


def test_one_order_received_by_two_sellers_is_recorded_once(pg_url: str) -> None:
    books = [OrderBook(pg_url) for _ in range(4)]
    try:
        outcomes: list[str] = []

        def receive(i: int) -> None:
            try:
                decided(books[i].receive(bytes(16), b"e", HOLDER, AMOUNT, bytes(32), ["amount"]))
                outcomes.append("recorded")
            except TransactionError as exc:
                outcomes.append(exc.code)

        in_threads(4, receive)
        assert sorted(outcomes) == ["recorded", "replay", "replay", "replay"]
    finally:
        for book in books:
            book.close()


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "fault"), [
    (errors.DiskFull, StorageFull),
    (errors.OutOfMemory, StorageFull),
    (errors.TooManyConnections, StorageFull),
    (errors.AdminShutdown, StorageUnavailable),
    (errors.CrashShutdown, StorageUnavailable),
    (errors.ConnectionFailure, StorageUnavailable),
    (errors.IoError, StorageLost),
    (errors.DataCorrupted, StorageLost),
    (errors.IndexCorrupted, StorageLost),
    (errors.UniqueViolation, type(None)),
    (errors.CheckViolation, type(None)),
])
def test_storage_faults_are_told_apart(error: type[psycopg.Error], fault: type) -> None:
    mapped = storage_fault(error("what the server said"))
    assert isinstance(mapped, fault)
    if isinstance(mapped, TransactionError):
        assert mapped.code == "internal"


def test_a_killed_connection_is_replaced(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    try:
        ledger.add_account(ACCOUNT)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        # the pool checks a connection before lending it: the next decision just works
        decision, _seen = decided(ledger.authorise(order(1), funded))
        assert decision.approved and ledger.debits(order(1).order_id) == 1
    finally:
        ledger.close()


def test_a_restarted_server_is_rejoined_and_nothing_acknowledged_is_lost(
        private_postgres: PostgresServer) -> None:
    url = private_postgres.create_database()
    ledger = Ledger(url)
    try:
        ledger.add_account(ACCOUNT)
        decided(ledger.authorise(order(1), funded))
        private_postgres.stop()
        with pytest.raises(StorageUnavailable) as down:
            decided(ledger.authorise(order(2), funded))
        assert down.value.code == "internal"
        private_postgres.start()
        assert decided(ledger.authorise(order(1), funded))[1] is Seen.RETRANSMISSION
        assert decided(ledger.authorise(order(2), funded))[1] is Seen.NEW
        assert ledger.account(CARD).balance == ACCOUNT.balance - 2 * AMOUNT  # type: ignore
        private_postgres.kill()  # and a crash, then recovery from the WAL
        private_postgres.start()
        assert ledger.debits(order(2).order_id) == 1
    finally:
        ledger.close()


def test_an_unreachable_database_is_one_line() -> None:
    from tests.pg import free_port

    with pytest.raises(StorageUnavailable) as refused:
        Database(f"postgresql://nettx@127.0.0.1:{free_port()}/none", LEDGER, wait=1.0)
    assert "\n" not in str(refused.value) and "cannot connect" in str(refused.value)


def test_an_account_is_the_same_on_both_engines(pg_url: str, tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    for location in (pg_url, tmp_path / "ledger.sqlite"):
        ledger = Ledger(location)
        try:
            ledger.add_account(replace(ACCOUNT, blocked=True, balance=2**40))
            assert ledger.accounts() == [replace(ACCOUNT, blocked=True, balance=2**40)]
            assert isinstance(ledger.account(CARD), Account)
        finally:
            ledger.close()
