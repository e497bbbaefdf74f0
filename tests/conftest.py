"""Shared fixtures: a personalised card on every reader, and the real pcscd + vpcd stack.

`card_on_reader` is parametrised over in-process, embedded vpcd, PC/SC, serial (T=1 on a
socat pty pair, the card in its own process) and serial-t0 (the same line, T=0 picked by
PPS), so each session behaviour is tested through all of them. One private pcscd (its own
mount and network namespaces, see vpcd_config/README.md) is started per test session, on
free ports, and stopped by PID at the end; a system pcscd, if any, is left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from card_applet import blom
from card_applet.applet import Applet
from card_applet.state import FileStore
from host.centre.authority import Authority
from host.centre.personalisation import personalise
from host.parties.softcard import software_card
from terminal.cardproc import CardProcess
from terminal.embedded import EmbeddedReader
from terminal.inprocess import InProcessReader
from terminal.ports import free_vpcd_port
from terminal.reader import Reader
from terminal.session import CardSession
from tests.pg import PostgresServer, PostgresUnavailable

REPO = Path(__file__).resolve().parents[1]
PCSCD_SCRIPT = REPO / "vpcd_config" / "pcscd-vpcd"
HOLDER = "holder:alice@example.org"
SELLER = "seller:shop.example"
PIN, PUK = "1234", "12345678"
PCSC_READER = "Virtual PCD 00 00"  # vpcd's first slot
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """A service or tool the test needs is missing: under CI=true a failure (CI must run
    everything), elsewhere a skip that says why."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


# -- the centre and cards ---------------------------------------------------------------------


@dataclass
class Centre:
    authority: Authority
    seller_row: list[int]

    def personalised_card(self, path: Path, holder: str = HOLDER) -> Path:
        self.authority.manufacture_card(path)
        (row,) = self.authority.rows_for([blom.x_of(holder)])
        reader = InProcessReader(Applet(FileStore(path)))
        personalise(CardSession(reader), self.authority.transport_master, holder, row, PIN, PUK)
        return path

    def seller(self) -> CardSession:
        return software_card(SELLER, self.seller_row)


@pytest.fixture(scope="session")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Centre:
    authority = Authority(tmp_path_factory.mktemp("centre"))
    authority.init(k=8)
    rows = authority.issue([SELLER])
    return Centre(authority, rows[SELLER])


@pytest.fixture
def card_state(centre: Centre, tmp_path: Path) -> Path:
    return centre.personalised_card(tmp_path / "card.json")


# -- pcscd ------------------------------------------------------------------------------------
# The suite runs its own pcscd in a private mount namespace (pcscd-vpcd --private) and never
# touches the machine's /run/pcscd, so a system pcscd may run beside it. libpcsclite reads
# PCSCLITE_CSOCK_NAME once, at the first call that needs the socket, so it is set when the
# session starts, before anything can load pyscard; every PC/SC tool the tests start inherits it.

PCSCD_RUN_DIR = Path(tempfile.mkdtemp(prefix="nettx-pcscd-"))
PCSCD_SOCKET = PCSCD_RUN_DIR / "sock" / "pcscd.comm"
os.environ["PCSCLITE_CSOCK_NAME"] = str(PCSCD_SOCKET)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(PCSCD_RUN_DIR, ignore_errors=True)


@dataclass
class Pcscd:
    port: int
    run_dir: Path
    pid: int = 0

    def start(self) -> None:
        out = subprocess.run([str(PCSCD_SCRIPT), "start", "--private", "--port", str(self.port),
                              "--run-dir", str(self.run_dir)], capture_output=True, text=True,
                             timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"pcscd-vpcd start failed: {out.stderr.strip()}")
        self.pid = start_output_pid(out.stdout)

    def stop(self) -> None:
        subprocess.run([str(PCSCD_SCRIPT), "stop", "--run-dir", str(self.run_dir)],
                       capture_output=True, timeout=60, check=True)

    def restart(self) -> None:
        self.stop()
        self.start()


def start_output_pid(stdout: str) -> int:
    """pcscd's PID from `pcscd-vpcd start`'s PCSCD_PID=... line."""
    for line in stdout.splitlines():
        if line.startswith("PCSCD_PID="):
            return int(line.split("=", 1)[1])
    raise RuntimeError(f"pcscd-vpcd start printed no PCSCD_PID: {stdout!r}")


PCSC_TOOLS = ("pcscd", "pcsc_scan", "opensc-tool", "unshare", "nsenter", "ip", "python3")


def pcsc_stack_missing() -> str | None:
    """Why the private pcscd + vpcd stack cannot run here, or None."""
    for tool in PCSC_TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not list(Path("/usr/lib").glob("**/pcsc/drivers/serial/libifdvpcd.so")):
        return "vsmartcard-vpcd not installed"
    if os.geteuid() != 0:
        return "pcscd and its private namespaces need root"
    return None


def require_pcsc_stack() -> None:
    missing = pcsc_stack_missing()
    if missing:
        unavailable(f"real PC/SC stack unavailable: {missing} (make test installs it)")


@pytest.fixture(scope="session")
def pcscd() -> Iterator[Pcscd]:
    require_pcsc_stack()
    service = Pcscd(free_vpcd_port(), PCSCD_RUN_DIR)
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def served_card(pcscd: Pcscd, card_state: Path, tmp_path: Path) -> Iterator[CardProcess]:
    """The personalised card in pcscd's first vpcd slot, served by its own card process."""
    from terminal.pcsc import wait_for_card, wait_until_card_gone  # pyscard: only here

    with CardProcess(card_state, "127.0.0.1", pcscd.port, log_path=tmp_path / "card.log") as cp:
        wait_for_card(PCSC_READER).close()
        yield cp
    wait_until_card_gone(PCSC_READER)


# -- a personalised card on each reader ------------------------------------------------------


READERS = ["inprocess", "embedded", "pcsc", "serial", "serial-t0"]


@pytest.fixture(params=READERS)
def card_on_reader(request: pytest.FixtureRequest, card_state: Path) -> Iterator[Reader]:
    kind = request.param
    if kind == "inprocess":
        reader: Reader = InProcessReader(Applet(FileStore(card_state)))
        yield reader
        reader.close()
        return
    if kind in ("serial", "serial-t0"):
        from terminal.cardproc import SerialCardProcess
        from terminal.serial import SerialReader
        from tests.serial_support import socat_pair

        # serial-t0: the card offers T=0 and T=1 (T=0 first), the reader picks T=0 by PPS
        t0 = kind == "serial-t0"
        with socat_pair(card_state.parent) as (card_tty, reader_tty), \
                SerialCardProcess(card_state, card_tty,
                                  extra=["--protocol", "both"] if t0 else None):
            line = SerialReader(reader_tty, protocol=0 if t0 else 1)
            try:
                line.wait_for_card(timeout=15)
                yield line
            finally:
                line.close()
        return
    if kind == "embedded":
        embedded = EmbeddedReader("127.0.0.1", 0)
        with CardProcess(card_state, "127.0.0.1", embedded.port):
            embedded.wait_for_card(timeout=15)
            try:
                yield embedded
            finally:
                embedded.close()
        return
    from terminal.pcsc import wait_for_card, wait_until_card_gone  # pyscard: only here

    service: Pcscd = request.getfixturevalue("pcscd")
    with CardProcess(card_state, "127.0.0.1", service.port):
        reader = wait_for_card(PCSC_READER)
        try:
            yield reader
        finally:
            reader.close()
    wait_until_card_gone(PCSC_READER)


@pytest.fixture
def session(card_on_reader: Reader) -> CardSession:
    return CardSession(card_on_reader)


# -- PostgreSQL ---------------------------------------------------------------------------------
#
# One private server per test session (tests/pg.py), a new database per test; a test that
# restarts or kills the server gets one of its own (`private_postgres`).


def _postgres_server() -> PostgresServer:
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = _postgres_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    server = _postgres_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A new, empty database on the session's server."""
    return postgres.create_database()


ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(params=ENGINES)
def store_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Path | str]:
    """Where a store lives, on each engine: `location(name)` is a SQLite file in tmp_path, or
    a new database on the session's PostgreSQL server (one per name)."""
    if request.param == "sqlite":
        return lambda name: tmp_path / f"{name}.sqlite"
    server: PostgresServer = request.getfixturevalue("postgres")
    made: dict[str, str] = {}

    def location(name: str) -> str:
        if name not in made:
            made[name] = server.create_database()
        return made[name]

    return location
