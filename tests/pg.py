"""A private PostgreSQL server for the tests, from Debian's `postgresql` package.

`PostgresServer` runs `initdb` and `pg_ctl` as an unprivileged user (the package's `postgres`
account when the tests run as root, which PostgreSQL refuses to run as; the current user
otherwise), on a data directory and a socket directory in a private temporary directory owned
by that user, listening on 127.0.0.1 only, on a free port, with trust authentication on
loopback and the local socket only. It is stopped by PID: `pg_ctl stop -m fast`, then SIGKILL
to the postmaster it started if that did not end it. A test can stop and start it again on the
same data directory and port (a database restarted under running parties).

fsync is off unless `start(durable=True)` (the benchmark's): the tests restart the server,
never the machine, and a server stopped or killed leaves its writes in the page cache, where
the restarted server reads them back.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVICE_USER = "postgres"
HBA = """\
# private test server: loopback and its own socket directory only
local all all trust
host  all all 127.0.0.1/32 trust
"""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed, or it would not start."""


def server_bin() -> Path:
    """Debian installs the server programs per major version, out of PATH: take the newest."""
    versions = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    if not versions:
        found = shutil.which("initdb")
        if found is None:
            raise PostgresUnavailable("PostgreSQL's initdb not found (Debian package "
                                      "`postgresql`; `make test-deps` installs it)")
        return Path(found).parent
    return versions[-1].parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One private PostgreSQL cluster; `url(name)` names a database on it."""

    def __init__(self) -> None:
        self.bin = server_bin()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                self.account = pwd.getpwnam(SERVICE_USER)
            except KeyError:
                raise PostgresUnavailable(f"no {SERVICE_USER!r} user (Debian's postgresql "
                                          f"package creates it)") from None
        else:
            self.account = pwd.getpwuid(os.getuid())
        self.root = Path(tempfile.mkdtemp(prefix="nettx-pg-"))
        os.chown(self.root, self.account.pw_uid, self.account.pw_gid)
        self.data, self.sockets = self.root / "data", self.root / "sockets"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.pid: int | None = None
        self._names = itertools.count(1)
        self._as_user(["mkdir", "-m", "700", str(self.sockets)])
        self._as_user([str(self.bin / "initdb"), "-D", str(self.data), "-U", "nettx",
                       "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                      timeout=120)
        (self.data / "pg_hba.conf").write_text(HBA)
        os.chown(self.data / "pg_hba.conf", self.account.pw_uid, self.account.pw_gid)

    def _as_user(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.account.pw_name, "--"] if self.as_root else []
        proc = subprocess.run(prefix + argv, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, check=False)
        if proc.returncode != 0:
            raise PostgresUnavailable(f"{Path(argv[0]).name} failed: "
                                      f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        return proc

    def start(self, *, durable: bool = False) -> None:
        """`durable`: fsync on, as a production server runs (a benchmark beside SQLite with
        synchronous=FULL); the tests leave it off."""
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                   f"{'' if durable else '-c fsync=off -c full_page_writes=off '}"
                   "-c max_connections=200 "
                   "-c max_locks_per_transaction=256 -c max_pred_locks_per_transaction=256")
        self._as_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                       "-w", "-t", "60", "-o", options, "start"], timeout=90)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """`pg_ctl stop -m fast`; then the postmaster this started, by PID, if still there."""
        if self.pid is None:
            return
        with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
            self._as_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                           "-w", "-t", "30", "stop"], timeout=40)
        if _alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.pid = None

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends notice and exit); `start` recovers from WAL."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        while _alive(self.pid):
            time.sleep(0.05)
        self.pid = None
        # the backends hold the shared memory until they notice the postmaster is gone
        time.sleep(0.5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://nettx@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as gone once reaped
    with contextlib.suppress(ChildProcessError):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
