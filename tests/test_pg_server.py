"""The tests' private PostgreSQL (tests/pg.py): it serves on loopback, survives a restart on
the same data directory and port with what it had committed, and leaves no process behind."""

from __future__ import annotations

import os

import psycopg

from tests.pg import PostgresServer, _alive


def test_a_restarted_server_keeps_its_port_and_its_data(
        private_postgres: PostgresServer) -> None:
    url = private_postgres.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x integer PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        (listen,) = conn.execute("SHOW listen_addresses").fetchone()  # type: ignore[misc]
    assert listen == "127.0.0.1"
    port, first = private_postgres.port, private_postgres.pid
    private_postgres.restart()
    assert private_postgres.port == port and private_postgres.pid != first
    assert first is not None and not _alive(first)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    private_postgres.kill()  # and a crash: recovered from its WAL on start
    private_postgres.start()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_the_server_runs_unprivileged_and_stops_by_pid(private_postgres: PostgresServer) -> None:
    pid = private_postgres.pid
    assert pid is not None
    assert os.stat(f"/proc/{pid}").st_uid == private_postgres.account.pw_uid != 0 \
        or os.geteuid() != 0
    private_postgres.stop()
    assert not _alive(pid) and private_postgres.pid is None
