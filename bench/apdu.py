"""APDU throughput and latency of the nettx card through every reader, against two floors.

    .venv/bin/python bench/apdu.py [--seconds S] [--runs N] [--vicc-seconds V]
                                  [--no-pcsc | --pcsc-only] [--keep]

Prints the environment and ONE table: APDUs/s (median of N runs of S seconds each) and the
median / p99 latency over every sample of those runs, for

  workloads  GET DATA 00 CA 00 C2 (the card serial, short Le) and PSO ENCIPHER of 1 KiB
             (SELECT, VERIFY and MSE SET peer once in setup, then only ENCIPHER);
  readers    in-process (the applet object over its FileStore: one ENCIPHER in 32 writes
             and fsyncs the next block of the transaction counter), embedded vpcd
             (terminal.embedded + a card process), and
             PC/SC (pcscd + vsmartcard's vpcd, started on free ports by
             vpcd_config/pcscd-vpcd, + a card process + terminal.pcsc);
  cards      nettx (card_applet.serve); the minimal echo (bench/minimal_echo.py: a socket
             loop that imports nothing from the project and answers 90 00: the floor any
             card process pays); the echo card (bench/echo_card.py: 90 00 over our own vpcd
             socket loop: the floor of our loop); and Debian's vicc where /usr/bin/vicc
             exists (GET CHALLENGE as its short command: it crashes on a SELECT with FCI).

Each card is set against the minimal echo measured in the same alternating rounds. Locally
every cell alternates with every other (run 1 of each, then run 2, ...). Through pcscd the
minimal echo stays in slot `Virtual PCD 00 01` while nettx, then the echo card, then vicc,
then a second minimal echo take slot `00 00`, each for its own alternating rounds against it
(the last pair shows how even the two slots are). The PC/SC cells run in their own phase, on
a private pcscd (pcscd-vpcd --private: its own mount and network namespaces), so a system
pcscd is left alone. Everything started is stopped by PID on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script: bench/ is not a package
    sys.path.insert(0, str(REPO))

from bench.meters import (  # noqa: E402
    back_to_back,
    in_sections,
    machine_line,
    percentile,
    percentile_ms,
    python_line,
    results_console,
    results_table,
    sched_seconds,
    spread,
)
from bench.runs import (  # noqa: E402
    close_quietly,
    filesystem,
    load_average,
    stopping_everything,
    work_dir,
)
from card_applet import blom  # noqa: E402
from card_applet.apdu import EXTENDED_MAX_LE, CommandApdu  # noqa: E402
from card_applet.applet import Applet  # noqa: E402
from card_applet.line import LineTiming  # noqa: E402
from card_applet.state import FileStore  # noqa: E402
from card_applet.tlv import tlv  # noqa: E402
from card_applet.vocabulary import TAG_PLAIN, Ins, Pso  # noqa: E402
from host.centre.authority import Authority  # noqa: E402
from host.centre.personalisation import personalise  # noqa: E402
from terminal.cardproc import (  # noqa: E402
    VICC_PYTHONPATH,
    CardProcess,
    SerialCardProcess,
    terminate,
    vicc_argv,
    vicc_missing,
)
from terminal.embedded import EmbeddedReader  # noqa: E402
from terminal.inprocess import InProcessReader  # noqa: E402
from terminal.ports import free_vpcd_port  # noqa: E402
from terminal.serial import SerialReader  # noqa: E402
from terminal.session import CardSession  # noqa: E402

PCSCD_SCRIPT = REPO / "vpcd_config" / "pcscd-vpcd"
ECHO_CARD = Path(__file__).resolve().parent / "echo_card.py"
MINIMAL_ECHO = Path(__file__).resolve().parent / "minimal_echo.py"
SLOT = ("Virtual PCD 00 00", "Virtual PCD 00 01")  # vpcd on port P and P+1

HOLDERS = {"in-process": "holder:bench-inprocess@example.org",
           "embedded": "holder:bench-embedded@example.org",
           "pcsc": "holder:bench-pcsc@example.org",
           "serial": "holder:bench-serial@example.org"}
PEER = "seller:shop.example"
PIN, PUK = "1234", "12345678"
K = 512
OK = b"\x90\x00"

GET_DATA_SERIAL = bytes.fromhex("00CA00C200")  # Le = 256: the whole 8-byte serial
GET_CHALLENGE_8 = bytes.fromhex("0084000008")
PLAINTEXT = bytes(range(256)) * 4  # 1 KiB
ENCIPHER_1K = CommandApdu(0x00, Ins.PERFORM_SECURITY_OPERATION, Pso.ENCIPHER >> 8,
                          Pso.ENCIPHER & 0xFF, tlv(TAG_PLAIN, PLAINTEXT),
                          EXTENDED_MAX_LE).to_bytes()

READER_LABEL = {"in-process": "in-process", "embedded": "embedded vpcd", "pcsc": "PC/SC",
                "serial": "serial T=1 (pty)"}
CARD_LABEL = {"nettx": "nettx", "echo": "echo (own loop)", "minimal": "minimal echo",
              "vicc": "vicc"}
# vicc's short command is GET CHALLENGE: it crashes on a SELECT with FCI, so it has no serial
WORKLOAD_LABEL = {"short": "GET DATA 00CA00C2 (serial)", "challenge": "GET CHALLENGE 00840000 08",
                  "encipher": "PSO ENCIPHER 1 KiB"}
WORKLOAD_APDU = {"short": GET_DATA_SERIAL, "challenge": GET_CHALLENGE_8,
                 "encipher": ENCIPHER_1K}

err = Console(stderr=True, highlight=False)


class BenchError(Exception):
    pass


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Cell:
    reader: str  # in-process | embedded | pcsc | serial
    card: str  # nettx | echo | minimal | vicc
    workload: str  # short | challenge | encipher
    seconds: float
    apdu: bytes = b""
    transmit: Callable[[bytes], bytes] | None = None
    na: str | None = None
    wire_bytes: int = 0  # serial: T=1 bytes on the line per APDU, both ways
    slot: int | None = None  # PC/SC: the vpcd slot (00 or 01) the card sits in
    # the minimal echo measured in the same alternating rounds: this row's floor
    floor: Cell | None = None
    pid: int | None = None  # the card process, whose CPU time each run reads from /proc
    rates: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)  # ns per APDU, every run
    card_cpu: float = 0.0  # s the card process was on a CPU during the runs
    terminal_cpu: float = 0.0  # s this thread (the reader's side: pyscard, ...) was

    @property
    def card_cpu_us(self) -> float | None:
        """The card process's CPU time per APDU, in µs (None: no process, or no /proc)."""
        if self.pid is None or not self.samples or not self.card_cpu:
            return None
        return self.card_cpu / len(self.samples) * 1e6

    @property
    def terminal_cpu_us(self) -> float | None:
        """The terminal's CPU time per APDU (this thread: the reader driver, and for
        in-process the applet too), in µs."""
        return self.terminal_cpu / len(self.samples) * 1e6 if self.samples else None

    @property
    def workload_label(self) -> str:
        return WORKLOAD_LABEL[self.workload]

    @property
    def card_label(self) -> str:
        label = CARD_LABEL[self.card]
        # PC/SC rows are all slot 00; the minimal echo's slot tells it from its floor
        return f"{label} (00)" if self.card == "minimal" and self.slot == 0 else label

    def run(self, seconds: float | None = None) -> None:
        """One timed run: APDUs back to back for `seconds`; each response must end 90 00."""
        assert self.transmit is not None
        cpu = sched_seconds(self.pid)[0] if self.pid is not None else 0.0
        terminal = time.thread_time()
        run = back_to_back(self.transmit, self.apdu,
                           self.seconds if seconds is None else seconds, self.check)
        if seconds is None:  # a warm-up is not a run
            self.terminal_cpu += time.thread_time() - terminal
            self.rates.append(run.rate)
            self.samples.extend(run.latencies)
            if self.pid is not None:
                self.card_cpu += sched_seconds(self.pid)[0] - cpu

    def check(self, response: bytes) -> None:
        if response[-2:] != OK:
            raise BenchError(f"{self.card} answered {response[-2:].hex().upper()} to "
                             f"{self.apdu[:4].hex().upper()}")

    def fail(self, exc: BaseException) -> None:
        self.na = f"error: {type(exc).__name__}: {exc}"
        self.rates.clear()
        self.samples.clear()
        err.print(f"[red]{self.reader} / {self.card} / {self.workload}: {self.na}")


def measure(cells: list[Cell], runs: int, phase: str) -> None:
    """The short commands' cells in rounds of their own, then ENCIPHER's: the EEPROM commits
    (fsyncs, and the writeback they leave behind) must not land on the round of one short
    cell and miss its floor's."""
    for group, label in (({"short", "challenge"}, "short"), ({"encipher"}, "ENCIPHER")):
        rounds([c for c in cells if c.workload in group], runs, f"{phase}, {label}")


def rounds(cells: list[Cell], runs: int, phase: str) -> None:
    """A warm-up per cell, then `runs` rounds of one run per cell, every other round in
    reverse order, so a card and its floor take turns going first (drift in the background
    load then favours neither)."""
    live = [c for c in cells if c.na is None]
    if not live:
        return
    for cell in live:  # warm-up: connections, caches, the first fsyncs
        run_guarded(cell, min(0.2, cell.seconds))
    for r in range(runs):
        if r % 10 == 0 or r == runs - 1:
            err.print(f"{phase}: round {r + 1}/{runs} "
                      f"({sum(c.seconds for c in live if c.na is None):.1f} s a round)")
        for cell in (live if r % 2 == 0 else live[::-1]):
            run_guarded(cell)


def run_guarded(cell: Cell, seconds: float | None = None) -> None:
    """One run of a cell; an error ends the cell (it reads "error: ..."), not the bench."""
    if cell.na is not None:
        return
    try:
        cell.run(seconds)
    except Exception as exc:
        cell.fail(exc)


# -- processes, all stopped by PID ------------------------------------------------------------


Started = CardProcess | subprocess.Popen  # a card process: what is read is its pid


def spawn(stack: contextlib.ExitStack, argv: list[str], log: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    out = stack.enter_context(open(log, "ab"))  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, cwd=REPO)
    stack.callback(terminate, proc)
    return proc


def card_process(stack: contextlib.ExitStack, state: Path, port: int, log: Path) -> CardProcess:
    proc = CardProcess(state, "127.0.0.1", port, log_path=log)
    stack.callback(proc.stop)
    return proc


def echo_process(stack: contextlib.ExitStack, port: int, log: Path) -> subprocess.Popen:
    return spawn(stack, [sys.executable, str(ECHO_CARD), "--vpcd", f"127.0.0.1:{port}"], log)


def minimal_process(stack: contextlib.ExitStack, port: int, log: Path) -> subprocess.Popen:
    return spawn(stack, [sys.executable, str(MINIMAL_ECHO), f"127.0.0.1:{port}"], log)


def vicc_process(stack: contextlib.ExitStack, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(VICC_PYTHONPATH))
    return spawn(stack, vicc_argv("127.0.0.1", port), log, env)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def pcsc_missing() -> str | None:
    if shutil.which("pcscd") is None:
        return "pcscd not installed"
    if shutil.which("pcsc_scan") is None:
        return "pcsc_scan not installed (pcsc-tools, needed by pcscd-vpcd)"
    if not list(Path("/usr/lib").glob("**/pcsc/drivers/serial/libifdvpcd.so")):
        return "vsmartcard-vpcd not installed"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError as exc:
        return f"pyscard not importable ({exc})"
    return None


@dataclass
class Pcscd:
    port: int
    run_dir: Path
    pid: int = 0
    started: bool = False

    def start(self) -> None:
        self.started = True  # from here on, stop() must run (the pid file may exist)
        out = subprocess.run([str(PCSCD_SCRIPT), "start", "--private", "--port",
                              str(self.port), "--run-dir", str(self.run_dir)],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise BenchError(f"pcscd-vpcd start failed: {out.stderr.strip()}")
        self.pid = next(int(line.split("=", 1)[1]) for line in out.stdout.splitlines()
                        if line.startswith("PCSCD_PID="))
        # libpcsclite reads this once, at this process's first PC/SC call (after this one)
        os.environ["PCSCLITE_CSOCK_NAME"] = str(self.run_dir / "sock" / "pcscd.comm")

    def _own_pid(self) -> int | None:
        try:
            text = (self.run_dir / "pcscd.pid").read_text()
        except OSError:
            return None
        digits = "".join(ch for ch in text if ch.isdigit())
        return int(digits) if digits else None

    def stop(self) -> None:
        if not self.started:
            return
        pid = self.pid or self._own_pid()
        subprocess.run([str(PCSCD_SCRIPT), "stop", "--run-dir", str(self.run_dir)],
                       capture_output=True, timeout=60)
        if pid and _alive(pid):  # the script failed us: by PID, hard
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.started = False


# -- the cards --------------------------------------------------------------------------------


def personalise_cards(home: Path) -> dict[str, Path]:
    """One card per reader (so no two applets share an EEPROM file), exactly as
    tests/conftest.py Centre.personalised_card does, with the default k."""
    authority = Authority(home / "centre")
    authority.init(k=K)
    rows = authority.rows_for([blom.x_of(holder) for holder in HOLDERS.values()])
    cards = {}
    for (reader, holder), row in zip(HOLDERS.items(), rows, strict=True):
        path = home / f"card-{reader}.json"
        authority.manufacture_card(path)
        session = CardSession(InProcessReader(Applet(FileStore(path))))
        personalise(session, authority.transport_master, holder, row, PIN, PUK)
        cards[reader] = path
    return cards


def nettx_cells(reader_kind: str, reader, seconds: float,
                slot: int | None = None) -> list[Cell]:
    """SELECT, VERIFY PIN, MSE SET peer once; then raw GET DATA / ENCIPHER APDUs."""
    session = CardSession(reader)
    session.select()
    session.verify_pin(PIN)
    session.set_peer(PEER)
    sealed = session.encrypt(PLAINTEXT)  # the raw APDU below is this very command
    if len(sealed) <= len(PLAINTEXT):
        raise BenchError("ENCIPHER returned less than its plaintext")
    return plain_cells(reader_kind, "nettx", reader, seconds, slot=slot)


def plain_cells(reader_kind: str, card: str, reader, seconds: float,
                workloads: tuple[str, ...] = ("short", "encipher"),
                slot: int | None = None) -> list[Cell]:
    """The cells of a card that needs no setup (or has had it)."""
    return [Cell(reader_kind, card, workload, seconds, WORKLOAD_APDU[workload],
                 reader.transmit, slot=slot) for workload in workloads]


def with_pid(cells: list[Cell], pid: int) -> list[Cell]:
    for cell in cells:
        cell.pid = pid
    return cells


def workloads_of(card: str) -> tuple[str, ...]:
    return ("challenge",) if card == "vicc" else ("short", "encipher")


def na_cells(reader_kind: str, cards: list[str], reason: str, seconds: float,
             slot: int | None = None) -> list[Cell]:
    return [Cell(reader_kind, card, workload, seconds, na=reason, slot=slot)
            for card in cards for workload in workloads_of(card)]


def guarded(make: Callable[[], list[Cell]], fallback: list[Cell], what: str) -> list[Cell]:
    """Set up one group of cells; a failure makes them n/a, it does not end the bench."""
    try:
        return make()
    except Exception as exc:
        reason = f"setup failed: {type(exc).__name__}: {exc}"
        err.print(f"[red]{what}: {reason}")
        for cell in fallback:
            cell.na = reason
        return fallback


# -- phases -----------------------------------------------------------------------------------


def phase_local(stack: contextlib.ExitStack, cards: dict[str, Path], tmp: Path,
                args: argparse.Namespace) -> list[Cell]:
    """In-process, embedded vpcd and serial: no pcscd. Every cell alternates with every
    other; the embedded rows' floor is the embedded minimal echo."""
    cells: list[Cell] = []
    inproc = InProcessReader(Applet(FileStore(cards["in-process"])))
    stack.callback(inproc.close)
    cells += nettx_cells("in-process", inproc, args.seconds)

    def embedded(card: str, start: Callable[[int], Started], make: Callable) -> list[Cell]:
        reader = EmbeddedReader("127.0.0.1", 0, card_timeout=15)
        stack.callback(reader.close)
        proc = start(reader.port)
        reader.wait_for_card(timeout=15)
        reader.power_on()
        return with_pid(make("embedded", reader), proc.pid)

    s, vs = args.seconds, args.vicc_seconds
    local: list[Cell] = []
    local += guarded(lambda: embedded(
        "nettx", lambda p: card_process(stack, cards["embedded"], p, tmp / "card-embedded.log"),
        lambda kind, r: nettx_cells(kind, r, s)), na_cells("embedded", ["nettx"], "", s),
        "embedded nettx")
    floors = guarded(lambda: embedded(
        "minimal", lambda p: minimal_process(stack, p, tmp / "minimal-embedded.log"),
        lambda kind, r: plain_cells(kind, "minimal", r, s)),
        na_cells("embedded", ["minimal"], "", s), "embedded minimal echo")
    local += floors
    local += guarded(lambda: embedded(
        "echo", lambda p: echo_process(stack, p, tmp / "echo-embedded.log"),
        lambda kind, r: plain_cells(kind, "echo", r, s)), na_cells("embedded", ["echo"], "", s),
        "embedded echo")
    missing = vicc_missing()
    if missing:
        local += na_cells("embedded", ["vicc"], f"n/a: {missing}", vs)
    else:
        local += guarded(lambda: embedded(
            "vicc", lambda p: vicc_process(stack, p, tmp / "vicc-embedded.log"),
            lambda kind, r: plain_cells(kind, "vicc", r, vs, ("challenge",))),
            na_cells("embedded", ["vicc"], "", vs), "embedded vicc")
    floor_of = {c.workload: c for c in floors}
    floor_of["challenge"] = floor_of["short"]  # both 5-byte case-2 commands
    for cell in local:
        if cell.card != "minimal":
            cell.floor = floor_of[cell.workload]
    cells += local
    if shutil.which("socat") is None:
        cells += na_cells("serial", ["nettx"], "n/a: socat not installed", s)
    else:
        cells += guarded(lambda: serial_cells(stack, cards["serial"], tmp, s),
                         na_cells("serial", ["nettx"], "", s), "serial nettx")
    measure(cells, args.runs, "in-process + embedded + serial")
    return cells


def serial_cells(stack: contextlib.ExitStack, state: Path, tmp: Path,
                 seconds: float) -> list[Cell]:
    """A socat pty pair, the card process on one end (--serial), SerialReader on the other;
    the T=1 bytes each APDU puts on the line are counted once, in setup."""
    card_tty, reader_tty = tmp / "card-tty", tmp / "reader-tty"
    socat = spawn(stack, ["socat", f"pty,raw,echo=0,link={card_tty}",
                          f"pty,raw,echo=0,link={reader_tty}"], tmp / "socat.log")
    deadline = time.monotonic() + 10
    while not (card_tty.exists() and reader_tty.exists()):
        if socat.poll() is not None or time.monotonic() > deadline:
            raise BenchError("socat made no pty pair")
        time.sleep(0.02)
    card = SerialCardProcess(state, str(card_tty), log_path=tmp / "card-serial.log")
    stack.callback(card.stop)
    reader = SerialReader(str(reader_tty))
    stack.callback(reader.close)
    reader.wait_for_card(15)
    cells = with_pid(nettx_cells("serial", reader, seconds), card.pid)
    for cell in cells:
        before = reader.stats.bytes_sent + reader.stats.bytes_received
        if cell.transmit is None or cell.transmit(cell.apdu)[-2:] != OK:
            raise BenchError(f"serial setup: {cell.workload} failed")
        cell.wire_bytes = reader.stats.bytes_sent + reader.stats.bytes_received - before
    return cells


# PC/SC: who takes slot 00, in turn, against the minimal echo in slot 01, and with what
PCSC_SEATS = (("nettx", ("short", "encipher")), ("echo", ("short", "encipher")),
              ("vicc", ("challenge",)), ("minimal", ("short",)))


def pcsc_na(reason: str, seconds: float, vicc_seconds: float) -> list[Cell]:
    return [Cell("pcsc", card, workload, vicc_seconds if card == "vicc" else seconds,
                 na=reason, slot=0) for card, workloads in PCSC_SEATS for workload in workloads]


def phase_pcsc(stack: contextlib.ExitStack, cards: dict[str, Path], tmp: Path,
               args: argparse.Namespace) -> list[Cell]:
    """pcscd + vpcd: the minimal echo sits in slot 01 (port P+1) throughout; nettx, the echo
    card, vicc and a second minimal echo take slot 00 (port P) in turn, and each is measured
    in alternating rounds with the slot 01 echo (its floor) before it leaves."""
    from terminal.pcsc import wait_for_card, wait_until_card_gone  # pyscard: only here

    s, vs = args.seconds, args.vicc_seconds
    missing = pcsc_missing()
    if missing:
        return pcsc_na(f"n/a: {missing}", s, vs)

    pcscd = Pcscd(free_vpcd_port(), tmp / "pcscd")
    pcscd.run_dir.mkdir()
    stack.callback(pcscd.stop)
    err.print(f"starting pcscd with vpcd on ports {pcscd.port}, {pcscd.port + 1}")
    try:
        pcscd.start()
    except BenchError as exc:
        err.print(f"[red]{exc}")
        return pcsc_na(f"n/a: {exc}", s, vs)
    err.print(f"pcscd pid {pcscd.pid}")

    try:
        floor_pid = minimal_process(stack, pcscd.port + 1, tmp / "minimal-pcsc-01.log").pid
        floor_reader = wait_for_card(SLOT[1])
        stack.callback(floor_reader.close)
    except Exception as exc:
        err.print(f"[red]PC/SC minimal echo (slot 01): {exc}")
        return pcsc_na(f"setup failed: minimal echo in slot 01: {exc}", s, vs)

    def start(card: str, seat: contextlib.ExitStack) -> Started:
        port, log = pcscd.port, tmp / f"{card}-pcsc-00.log"
        if card == "nettx":
            return card_process(seat, cards["pcsc"], port, log)
        if card == "echo":
            return echo_process(seat, port, log)
        if card == "vicc":
            return vicc_process(seat, port, log)
        return minimal_process(seat, port, log)

    cells: list[Cell] = []
    for card, workloads in PCSC_SEATS:
        seconds = vs if card == "vicc" else s
        fallback = [Cell("pcsc", card, w, seconds, slot=0) for w in workloads]
        missing = vicc_missing() if card == "vicc" else None
        if missing:
            cells += [Cell("pcsc", card, w, seconds, na=f"n/a: {missing}", slot=0)
                      for w in workloads]
            continue
        with contextlib.ExitStack() as seat:  # the slot 00 card and its handle leave after
            stack.callback(close_quietly, seat)

            def seated(card: str = card, workloads: tuple[str, ...] = workloads,
                       seconds: float = seconds, seat: contextlib.ExitStack = seat
                       ) -> list[Cell]:
                pid = start(card, seat).pid
                reader = wait_for_card(SLOT[0])
                seat.callback(reader.close)
                if card == "nettx":
                    return with_pid(nettx_cells("pcsc", reader, seconds, slot=0), pid)
                return with_pid(plain_cells("pcsc", card, reader, seconds, workloads, slot=0),
                                pid)

            pair = guarded(seated, fallback, f"PC/SC {CARD_LABEL[card]} (slot 00)")
            rounds: list[Cell] = []
            for cell in pair:
                if cell.na is None:
                    cell.floor = Cell("pcsc", "minimal", cell.workload, seconds,
                                      cell.apdu, floor_reader.transmit, slot=1, pid=floor_pid)
                    rounds += [cell, cell.floor]
            measure(rounds, args.runs, f"PC/SC {CARD_LABEL[card]} vs minimal echo")
            cells += pair
        with contextlib.suppress(Exception):  # the next card must not be taken for this one
            wait_until_card_gone(SLOT[0])
    return cells


# -- report -----------------------------------------------------------------------------------


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def environment(tmp: Path) -> str:
    pcscd = first_line(["pcscd", "--version"]) if shutil.which("pcscd") else "not installed"
    vpcd = sorted(Path("/usr/lib").glob("**/pcsc/drivers/serial/libifdvpcd.so.*"))
    fs, load = filesystem(tmp), load_average()
    return (f"{python_line()} | pcscd: {pcscd} | "
            f"vpcd: {vpcd[-1].name if vpcd else 'not installed'} | {machine_line(load)} | "
            f"card EEPROM on {fs} ({tmp})")


def round_ratios(cell: Cell) -> list[float]:
    """Run i of the cell over run i of its floor: the two ran one right after the other, so
    a burst of background load that slows one round slows both sides of its ratio."""
    if cell.floor is None:
        return []
    return [a / b for a, b in zip(cell.rates, cell.floor.rates, strict=False) if b]


def ratio(cell: Cell | None) -> float | None:
    """The median of the cell's per-round ratios to its floor (the minimal echo)."""
    ratios = round_ratios(cell) if cell is not None else []
    return statistics.median(ratios) if ratios else None


def own_loop_ratio(cell: Cell, cells: list[Cell]) -> str:
    """nettx against the echo card (our own loop), each taken over its minimal echo: where
    the two were measured in different rounds (PC/SC), the floor evens out the load."""
    echo = next((c for c in cells if c.reader == cell.reader and c.card == "echo"
                 and c.workload == cell.workload), None)
    ours, theirs = ratio(cell), ratio(echo)
    return f"{ours / theirs:.2f}" if ours and theirs else "n/a"


def render(cells: list[Cell], args: argparse.Namespace) -> Table:
    table = results_table(
        "nettx APDU throughput and latency",
        ("reader", "card", "command", "APDUs/s", "runs min–max", "median ms", "p99 ms",
         "card CPU µs/APDU", "terminal CPU µs/APDU", "floor APDUs/s", "× minimal echo",
         "rounds p25–p75",
         "× own loop", "samples"),
        left=("reader", "card", "command"),
        caption=(
            f"APDUs/s: median of the runs ({args.runs} × {args.seconds:g} s; vicc "
            f"{args.runs} × {args.vicc_seconds:g} s), min–max beside it; latency: median and "
            "p99 over every APDU of every run. card CPU: the card process's time on a CPU "
            "(/proc schedstat, all its threads) over the APDUs it answered in the runs; "
            "terminal CPU: the bench thread's (the reader driver: pyscard and libpcsclite "
            "for PC/SC; in-process, the applet itself), the same way. Both together far "
            "below 10^6 / APDUs/s: the round trip waits on the processes between them "
            "(pcscd, vpcd, the relay), neither end is saturated.\n"
            "minimal echo = bench/minimal_echo.py: a socket loop that imports nothing from "
            "nettx (vpcd framing, TCP_NODELAY, TCP_QUICKACK before each recv) and answers "
            "90 00. floor APDUs/s: the minimal echo's, measured in the same alternating rounds "
            "as the row: embedded, the embedded minimal echo (all embedded cells alternate); "
            "PC/SC, the minimal echo in slot 01 while the row's card sat in slot 00.\n"
            "× minimal echo: the median over the rounds of the row's APDUs/s in a round over "
            "the floor's in the same round (a run of the card, then one of the echo, or the "
            "reverse); rounds p25–p75: the quartiles of those per-round ratios.\n"
            "echo (own loop) = bench/echo_card.py: 90 00 over card_applet.vpcd's socket loop, "
            "the floor of our own loop. × own loop: nettx's × minimal echo over the echo "
            "card's.\n"
            "For ENCIPHER (1,037-byte extended command) an echo answers 2 bytes, nettx "
            "1,059, so that floor is a little kind.\n"
            "vicc cannot SELECT with FCI (Python 3 bug in Debian's vsmartcard 0.8), so its "
            "short command is GET CHALLENGE (embedded: against the echo's GET DATA, both "
            "5-byte case-2 commands); it has no ENCIPHER.\n"
            "PC/SC: every row's card sat in slot 00, its floor in slot 01; minimal echo (00) "
            "against minimal echo (01) shows how even the two slots are."))
    for c in in_sections(table, cells, lambda c: c.reader):
        row = [READER_LABEL[c.reader], c.card_label, c.workload_label]
        if c.na is not None or not c.rates:
            table.add_row(*row, c.na or "n/a", *[""] * 10)
            continue
        ns = sorted(c.samples)
        r, per_round = ratio(c), round_ratios(c)
        floor_rate = (f"{statistics.median(c.floor.rates):,.0f}"
                      if c.floor is not None and c.floor.rates else "—")
        cpu, terminal = c.card_cpu_us, c.terminal_cpu_us
        table.add_row(*row, *spread(c.rates), f"{percentile_ms(ns, 0.5):.3f}",
                      f"{percentile_ms(ns, 0.99):.3f}", f"{cpu:.1f}" if cpu else "—",
                      f"{terminal:.1f}" if terminal else "—", floor_rate,
                      f"{r:.2f}" if r is not None else "—",
                      (f"{percentile(per_round, 0.25):.2f}–{percentile(per_round, 0.75):.2f}"
                       if per_round else ""),
                      own_loop_ratio(c, cells) if c.card == "nettx" and c.floor else "",
                      f"{len(ns):,}")
    return table


def render_serial(cells: list[Cell]) -> Table | None:
    """The serial rows against the line: a pty moves bytes as fast as the processes do, a
    UART at the default rate carries 9,600 / 11 bytes/s in T=1 (11 etu per character)."""
    line = LineTiming()
    rows = [c for c in cells if c.reader == "serial" and c.rates and c.wire_bytes]
    if not rows:
        return None
    table = results_table(
        f"serial T=1 against a {line.baudrate:,} bit/s line "
        f"(T=1 carries at most {line.t1_char_rate:,.1f} bytes/s)",
        ("command", "APDUs/s (pty)", "wire bytes/APDU", "effective bytes/s", "× line rate",
         "APDUs/s at 9,600 bit/s"), left=("command",),
        caption="wire bytes: T=1 blocks both ways per APDU (prologue, INF, LRC). "
                "effective: APDUs/s × wire bytes. A pty is not paced, so the ratio "
                "shows how far the software outruns a real line; the last column "
                "is the APDUs/s that line would allow.")
    for c in rows:
        rate = statistics.median(c.rates)
        effective = rate * c.wire_bytes
        table.add_row(c.workload_label, f"{rate:,.0f}", f"{c.wire_bytes:,}",
                      f"{effective:,.0f}", f"{effective / line.t1_char_rate:,.1f}",
                      f"{line.t1_char_rate / c.wire_bytes:,.2f}")
    return table


def sort_key(c: Cell) -> tuple[int, int, int]:
    reader = ["in-process", "embedded", "pcsc", "serial"].index(c.reader)
    return (reader, ["short", "challenge", "encipher"].index(c.workload),
            ["nettx", "echo", "minimal", "vicc"].index(c.card))


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one run (0.2)")
    parser.add_argument("--runs", type=int, default=50,
                        help="runs (rounds) per cell (50): many short rounds pair a card "
                             "with its floor more closely than a few long ones")
    parser.add_argument("--vicc-seconds", type=float, default=None,
                        help="length of one vicc run (default: --seconds)")
    phases = parser.add_mutually_exclusive_group()
    phases.add_argument("--no-pcsc", action="store_true", help="skip the PC/SC phase")
    phases.add_argument("--pcsc-only", action="store_true",
                        help="only the PC/SC phase (no in-process, embedded or serial rows)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (card files, process logs)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1:
        parser.error("--seconds must be > 0 and --runs >= 1")
    if args.vicc_seconds is None:
        args.vicc_seconds = args.seconds

    with stopping_everything(err.print) as bench_run:
        stack = bench_run.stack
        tmp = work_dir(stack, args.keep, "nettx-bench-", err.print)
        env_line = environment(tmp)
        err.print(f"personalising {len(HOLDERS)} cards (k = {K}) in {tmp}")
        cards = personalise_cards(tmp)
        cells: list[Cell] = []
        if not args.pcsc_only:
            with contextlib.ExitStack() as local:  # its processes end before PC/SC starts
                stack.callback(close_quietly, local)
                cells += phase_local(local, cards, tmp, args)
        if args.no_pcsc:
            cells += pcsc_na("n/a: --no-pcsc", args.seconds, args.vicc_seconds)
        else:
            cells += phase_pcsc(stack, cards, tmp, args)
    if bench_run.interrupted:
        return 130
    out = results_console(220)
    out.print(env_line, soft_wrap=True)
    out.print(render(sorted(cells, key=sort_key), args))
    serial_table = render_serial(cells)
    if serial_table is not None:
        out.print(serial_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
