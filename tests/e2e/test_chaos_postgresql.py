"""Several instances of each party on one PostgreSQL database, racing on the same accounts and
orders while random instances are killed with SIGKILL and the database server itself is
restarted once under them (tests/e2e/chaos.py): no double debit, no order decided twice or
left unfinished, every balance its initial one minus the debits that stand."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.chaos import ChaosConfig, run
from tests.pg import PostgresServer


def test_two_instances_of_each_party_on_postgresql_lose_nothing(
        private_postgres: PostgresServer, tmp_path: Path) -> None:
    config = ChaosConfig(seconds=45.0, holders=6, seed=20261130, grace=150.0, instances=2,
                         postgresql=private_postgres.create_database(),
                         restart_database=private_postgres.restart)
    report = run(config, tmp_path)
    figures = report.figures()
    print(figures)  # the run's figures, for the record (pytest -s)
    assert report.violations == [], (figures, report.violations[:20])
    assert report.stuck == 0, figures
    # the run did what it is for: hundreds of orders, every instance killed at least once
    # (seeded), the database restarted under them, orders completed and declined
    assert report.orders >= 100, figures
    assert report.database_restarts == 1, figures
    assert {name.split("-")[0] for name in report.kills} == {"seller", "issuer", "delivery"}, \
        figures
    assert report.seller_status["completed"] > 0 and report.seller_status["declined"] > 0, \
        figures
