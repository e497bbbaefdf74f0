"""APDU throughput and latency of the nettx card through every reader, against the floor.

    .venv/bin/python bench/apdu.py [--seconds S] [--runs N] [--vicc-seconds V]

Prints the environment and ONE table: APDUs/s (median of N runs of S seconds each) and the
median / p99 latency over every sample of those runs, for

  workloads  GET DATA 00 CA 00 C2 (the card serial, short Le) and PSO ENCIPHER of 1 KiB
             (SELECT, VERIFY and MSE SET peer once in setup, then only ENCIPHER);
  readers    in-process (the applet object over its FileStore: every ENCIPHER fsyncs the
             transaction counter), embedded vpcd (terminal.embedded + a card process), and
             PC/SC (pcscd + vsmartcard's vpcd, started on free ports by
             vpcd_config/pcscd-vpcd, + a card process + terminal.pcsc);
  cards      nettx (card_applet.serve), the echo card (bench/echo_card.py: 90 00 to every
             APDU over the same vpcd socket loop: the floor), and Debian's vicc where
             /usr/bin/vicc exists (GET CHALLENGE as its short command: it crashes on a
             SELECT with FCI).

Runs are interleaved (run 1 of every cell, then run 2, ...) so background load hits all
cells alike. The PC/SC cells run in their own phase, on a private pcscd (pcscd-vpcd
--private: its own mount and network namespaces), so a system pcscd is left alone.
Everything started is stopped by PID on exit, error, Ctrl-C or SIGTERM.
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
    interleaved,
    machine_line,
    percentile_ms,
    python_line,
    results_console,
    results_table,
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
WORKLOAD_LABEL = {"short": "GET DATA 00CA00C2 (serial)", "encipher": "PSO ENCIPHER 1 KiB"}

err = Console(stderr=True, highlight=False)


class BenchError(Exception):
    pass


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Cell:
    reader: str  # in-process | embedded | pcsc
    card: str  # nettx | echo | vicc
    workload: str  # short | encipher
    seconds: float
    apdu: bytes = b""
    transmit: Callable[[bytes], bytes] | None = None
    label: str = ""  # workload label override (vicc's short command)
    na: str | None = None
    wire_bytes: int = 0  # serial: T=1 bytes on the line per APDU, both ways
    rates: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)  # ns per APDU, every run

    @property
    def workload_label(self) -> str:
        return self.label or WORKLOAD_LABEL[self.workload]

    def run(self, seconds: float | None = None) -> None:
        """One timed run: APDUs back to back for `seconds`; each response must end 90 00."""
        assert self.transmit is not None
        run = back_to_back(self.transmit, self.apdu,
                           self.seconds if seconds is None else seconds, self.check)
        if seconds is None:  # a warm-up is not a run
            self.rates.append(run.rate)
            self.samples.extend(run.latencies)

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
    live = [c for c in cells if c.na is None]
    for cell in live:  # warm-up: connections, caches, the first fsyncs
        run_guarded(cell, min(0.2, cell.seconds))
    interleaved(runs, live, run_guarded,
                lambda r: err.print(f"{phase}: run {r + 1}/{runs} "
                                    f"({sum(c.seconds for c in live if c.na is None):.1f} s)"))


def run_guarded(cell: Cell, seconds: float | None = None) -> None:
    """One run of a cell; an error ends the cell (it reads "error: ..."), not the bench."""
    if cell.na is not None:
        return
    try:
        cell.run(seconds)
    except Exception as exc:
        cell.fail(exc)


# -- processes, all stopped by PID ------------------------------------------------------------


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


def nettx_cells(reader_kind: str, reader, seconds: float) -> list[Cell]:
    """SELECT, VERIFY PIN, MSE SET peer once; then raw GET DATA / ENCIPHER APDUs."""
    session = CardSession(reader)
    session.select()
    session.verify_pin(PIN)
    session.set_peer(PEER)
    sealed = session.encrypt(PLAINTEXT)  # the raw APDU below is this very command
    if len(sealed) <= len(PLAINTEXT):
        raise BenchError("ENCIPHER returned less than its plaintext")
    return [Cell(reader_kind, "nettx", "short", seconds, GET_DATA_SERIAL, reader.transmit),
            Cell(reader_kind, "nettx", "encipher", seconds, ENCIPHER_1K, reader.transmit)]


def echo_cells(reader_kind: str, reader, seconds: float) -> list[Cell]:
    return [Cell(reader_kind, "echo", "short", seconds, GET_DATA_SERIAL, reader.transmit),
            Cell(reader_kind, "echo", "encipher", seconds, ENCIPHER_1K, reader.transmit)]


def vicc_cell(reader_kind: str, reader, seconds: float) -> Cell:
    return Cell(reader_kind, "vicc", "short", seconds, GET_CHALLENGE_8, reader.transmit,
                label="GET CHALLENGE 00840000 08")


def na_cells(reader_kind: str, cards: list[str], reason: str, seconds: float) -> list[Cell]:
    cells = []
    for card in cards:
        for workload in (("short",) if card == "vicc" else ("short", "encipher")):
            label = "GET CHALLENGE 00840000 08" if card == "vicc" else ""
            cells.append(Cell(reader_kind, card, workload, seconds, label=label, na=reason))
    return cells


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
    """In-process and embedded vpcd: no pcscd."""
    cells: list[Cell] = []
    inproc = InProcessReader(Applet(FileStore(cards["in-process"])))
    stack.callback(inproc.close)
    cells += nettx_cells("in-process", inproc, args.seconds)

    def embedded(card: str, start: Callable[[int], object], make: Callable) -> list[Cell]:
        reader = EmbeddedReader("127.0.0.1", 0, card_timeout=15)
        stack.callback(reader.close)
        start(reader.port)
        reader.wait_for_card(timeout=15)
        reader.power_on()
        return make("embedded", reader)

    s, vs = args.seconds, args.vicc_seconds
    cells += guarded(lambda: embedded(
        "nettx", lambda p: card_process(stack, cards["embedded"], p, tmp / "card-embedded.log"),
        lambda kind, r: nettx_cells(kind, r, s)), na_cells("embedded", ["nettx"], "", s),
        "embedded nettx")
    cells += guarded(lambda: embedded(
        "echo", lambda p: echo_process(stack, p, tmp / "echo-embedded.log"),
        lambda kind, r: echo_cells(kind, r, s)), na_cells("embedded", ["echo"], "", s),
        "embedded echo")
    missing = vicc_missing()
    if missing:
        cells += na_cells("embedded", ["vicc"], f"n/a: {missing}", vs)
    else:
        cells += guarded(lambda: embedded(
            "vicc", lambda p: vicc_process(stack, p, tmp / "vicc-embedded.log"),
            lambda kind, r: [vicc_cell(kind, r, vs)]), na_cells("embedded", ["vicc"], "", vs),
            "embedded vicc")
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
    cells = nettx_cells("serial", reader, seconds)
    for cell in cells:
        before = reader.stats.bytes_sent + reader.stats.bytes_received
        if cell.transmit is None or cell.transmit(cell.apdu)[-2:] != OK:
            raise BenchError(f"serial setup: {cell.workload} failed")
        cell.wire_bytes = reader.stats.bytes_sent + reader.stats.bytes_received - before
    return cells


def phase_pcsc(stack: contextlib.ExitStack, cards: dict[str, Path], tmp: Path,
               args: argparse.Namespace) -> list[Cell]:
    """pcscd + vpcd: nettx on slot 00 (port P), the echo card on slot 01 (P+1), measured
    interleaved; then the echo card leaves and vicc takes slot 01."""
    from terminal.pcsc import wait_for_card, wait_until_card_gone  # pyscard: only here

    s, vs = args.seconds, args.vicc_seconds
    missing = pcsc_missing()
    if missing:
        reason = f"n/a: {missing}"
        return na_cells("pcsc", ["nettx", "echo", "vicc"], reason, s)

    pcscd = Pcscd(free_vpcd_port(), tmp / "pcscd")
    pcscd.run_dir.mkdir()
    stack.callback(pcscd.stop)
    err.print(f"starting pcscd with vpcd on ports {pcscd.port}, {pcscd.port + 1}")
    try:
        pcscd.start()
    except BenchError as exc:
        err.print(f"[red]{exc}")
        return na_cells("pcsc", ["nettx", "echo", "vicc"], f"n/a: {exc}", s)
    err.print(f"pcscd pid {pcscd.pid}")

    def on_slot(slot: int, start: Callable[[int], object], make: Callable) -> list[Cell]:
        start(pcscd.port + slot)
        reader = wait_for_card(SLOT[slot])
        stack.callback(reader.close)
        return make("pcsc", reader)

    cells: list[Cell] = []
    cells += guarded(lambda: on_slot(
        0, lambda p: card_process(stack, cards["pcsc"], p, tmp / "card-pcsc.log"),
        lambda kind, r: nettx_cells(kind, r, s)), na_cells("pcsc", ["nettx"], "", s),
        "PC/SC nettx")
    echo_stack = contextlib.ExitStack()
    stack.callback(echo_stack.close)
    cells += guarded(lambda: on_slot(
        1, lambda p: echo_process(echo_stack, p, tmp / "echo-pcsc.log"),
        lambda kind, r: echo_cells(kind, r, s)), na_cells("pcsc", ["echo"], "", s),
        "PC/SC echo")
    measure(cells, args.runs, "PC/SC")

    missing = vicc_missing()
    if missing:
        return cells + na_cells("pcsc", ["vicc"], f"n/a: {missing}", vs)
    echo_stack.close()  # reader handle and echo process: slot 01 is free again
    vicc = guarded(lambda: (wait_until_card_gone(SLOT[1]), on_slot(
        1, lambda p: vicc_process(stack, p, tmp / "vicc-pcsc.log"),
        lambda kind, r: [vicc_cell(kind, r, vs)]))[1], na_cells("pcsc", ["vicc"], "", vs),
        "PC/SC vicc")
    measure(vicc, args.runs, "PC/SC vicc")
    return cells + vicc


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


def render(cells: list[Cell], args: argparse.Namespace) -> Table:
    floors = {(c.reader, c.workload): statistics.median(c.rates)
              for c in cells if c.card == "echo" and c.rates}
    table = results_table(
                  "nettx APDU throughput and latency",
                  ("reader", "card", "command", "APDUs/s", "runs min–max", "median ms",
                   "p99 ms", "% of echo floor", "samples"),
                  left=("reader", "card", "command"),
                  caption=(
                      f"APDUs/s: median of the runs ({args.runs} × {args.seconds:g} s; vicc "
                      f"{args.runs} × {args.vicc_seconds:g} s), min–max beside it; latency: "
                      "median and p99 over every APDU of every run.\n"
                      "echo = bench/echo_card.py, 90 00 to everything over our vpcd socket "
                      "loop (TCP_QUICKACK): the floor. For ENCIPHER (1,037-byte extended command) "
                      "its answer is 2 bytes, ours 1,059, so that floor is a little kind.\n"
                      "% of echo floor: this card's median APDUs/s over the echo card's, same "
                      "reader and command (vicc: its GET CHALLENGE against the echo's GET "
                      "DATA, both 5-byte case-2 commands).\n"
                      "vicc cannot SELECT with FCI (Python 3 bug in Debian's vsmartcard 0.8), "
                      "so its short command is GET CHALLENGE; it has no ENCIPHER.\n"
                      "PC/SC: nettx in slot 00 (vpcd port P), echo then vicc in slot 01 (P+1)."))
    for c in in_sections(table, cells, lambda c: c.reader):
        row = [READER_LABEL[c.reader], c.card, c.workload_label]
        if c.na is not None or not c.rates:
            table.add_row(*row, c.na or "n/a", *[""] * 5)
            continue
        ns = sorted(c.samples)
        rate = statistics.median(c.rates)
        floor = floors.get((c.reader, c.workload))
        pct = "—" if c.card == "echo" else (f"{100 * rate / floor:.1f} %" if floor else "n/a")
        table.add_row(*row, *spread(c.rates), f"{percentile_ms(ns, 0.5):.3f}",
                      f"{percentile_ms(ns, 0.99):.3f}", pct, f"{len(ns):,}")
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


ORDER = {("in-process", "nettx"): 0, ("embedded", "nettx"): 1, ("embedded", "echo"): 2,
         ("embedded", "vicc"): 3, ("pcsc", "nettx"): 4, ("pcsc", "echo"): 5,
         ("pcsc", "vicc"): 6, ("serial", "nettx"): 7}


def sort_key(c: Cell) -> tuple[int, int, int]:
    reader = ["in-process", "embedded", "pcsc", "serial"].index(c.reader)
    return reader, ["short", "encipher"].index(c.workload), ORDER[(c.reader, c.card)]


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one run (2)")
    parser.add_argument("--runs", type=int, default=5, help="runs per cell (5)")
    parser.add_argument("--vicc-seconds", type=float, default=None,
                        help="length of one vicc run (default: half of --seconds, >= 0.5)")
    parser.add_argument("--no-pcsc", action="store_true", help="skip the PC/SC phase")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (card files, process logs)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1:
        parser.error("--seconds must be > 0 and --runs >= 1")
    if args.vicc_seconds is None:
        args.vicc_seconds = max(0.5, args.seconds / 2)

    with stopping_everything(err.print) as bench_run:
        stack = bench_run.stack
        tmp = work_dir(stack, args.keep, "nettx-bench-", err.print)
        env_line = environment(tmp)
        err.print(f"personalising {len(HOLDERS)} cards (k = {K}) in {tmp}")
        cards = personalise_cards(tmp)
        with contextlib.ExitStack() as local:  # its processes end before PC/SC starts
            stack.callback(close_quietly, local)
            cells = phase_local(local, cards, tmp, args)
        if args.no_pcsc:
            cells += na_cells("pcsc", ["nettx", "echo", "vicc"], "n/a: --no-pcsc",
                              args.seconds)
        else:
            cells += phase_pcsc(stack, cards, tmp, args)
    if bench_run.interrupted:
        return 130
    out = results_console(150)
    out.print(env_line, soft_wrap=True)
    out.print(render(sorted(cells, key=sort_key), args))
    serial_table = render_serial(cells)
    if serial_table is not None:
        out.print(serial_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
