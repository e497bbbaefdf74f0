"""The card's state file from the command line, as real processes: one card process per
card (issue 10 item 8) and sealed states (issue 10 item 11)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from card_applet.lockfile import lock_path_for
from card_applet.sealing import MAGIC
from tests.e2e.support import HOLDER, PIN, PUK

REPO = Path(__file__).resolve().parents[2]


def run(*args: str | Path, pass_fds: tuple[int, ...] = (), timeout: float = 60,
        ) -> subprocess.CompletedProcess[str]:
    # the secrets by name in the environment, never in argv
    return subprocess.run([sys.executable, "-m", "host.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, pass_fds=pass_fds,
                          env={**os.environ, "COLUMNS": "200", "NETTX_PIN": PIN,
                               "NETTX_PUK": PUK})


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode not in (0, None), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    result = run("authority", "init", "--home", home, "--k", "8")
    assert result.returncode == 0, result.stderr
    return home


def personalise(home: Path, state: Path, *key: str | Path) -> None:
    result = run("authority", "personalise", "--home", home, "--state", state, *key,
                 "--holder", HOLDER)
    assert result.returncode == 0, result.stdout + result.stderr


# -- one card process per card ----------------------------------------------------------------


@pytest.fixture
def serving(card_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A card process serving `card_file` on a private channel (its other end held here)."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "card_applet.serve", "--state",
                             str(card_file), "--vpcd-fd", str(theirs.fileno())],
                            cwd=REPO, pass_fds=(theirs.fileno(),), stderr=subprocess.PIPE)
    theirs.close()
    try:
        deadline = time.monotonic() + 15
        lock = lock_path_for(card_file)
        while not (lock.exists() and lock.read_text().strip() == str(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, "card did not start"
            time.sleep(0.02)
        yield proc
    finally:
        proc.kill()
        proc.wait()
        ours.close()
        assert proc.stderr is not None
        proc.stderr.close()


def test_a_second_card_process_on_one_state_is_refused(card_file: Path,
                                                       serving: subprocess.Popen[bytes]) -> None:
    second = subprocess.run([sys.executable, "-m", "card_applet.serve", "--state",
                             str(card_file), "--vpcd", "127.0.0.1:9"], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    line = one_error_line(second)
    assert "in use by another card process" in line and f"pid {serving.pid}" in line
    line = one_error_line(run("card", "serve", "--state", card_file, "--vpcd", "127.0.0.1:9",
                              timeout=30))
    assert "in use" in line
    # a command that would start its own card process, and an in-process reader, too
    assert "in use" in one_error_line(run("card", "info", "--state", card_file))
    assert "in use" in one_error_line(run("card", "info", "--reader", f"inprocess:{card_file}"))
    assert serving.poll() is None  # the first one keeps its card

    os.kill(serving.pid, signal.SIGKILL)  # the lock dies with its process: nothing to clean
    serving.wait()
    info = run("card", "info", "--state", card_file)
    assert info.returncode == 0, info.stderr
    assert HOLDER in info.stdout


# -- sealed states ----------------------------------------------------------------------------


def test_a_sealed_card_from_new_to_purchase_keys(home: Path, tmp_path: Path) -> None:
    key, wrong = tmp_path / "card.key", tmp_path / "wrong.key"
    key.write_bytes(os.urandom(32))
    wrong.write_bytes(os.urandom(32))
    state = tmp_path / "card.json"
    made = run("card", "new", "--home", home, "--state", state, "--state-key-file", key)
    assert made.returncode == 0 and "(sealed)" in made.stdout, made.stderr
    personalise(home, state, "--state-key-file", key)
    raw = state.read_bytes()
    assert raw.startswith(MAGIC) and HOLDER.encode() not in raw

    info = run("card", "info", "--state", state, "--state-key-file", key)
    assert info.returncode == 0 and HOLDER in info.stdout, info.stderr
    # from a file descriptor: the key is on a pipe, never in argv
    read_fd, write_fd = os.pipe()
    os.write(write_fd, key.read_bytes())
    os.close(write_fd)
    try:
        info = run("card", "info", "--state", state, "--state-key-fd", read_fd,
                   pass_fds=(read_fd,))
    finally:
        os.close(read_fd)
    assert info.returncode == 0 and HOLDER in info.stdout, info.stderr
    encrypt = run("card", "encrypt", "--home", home, "--state", state, "--state-key-file", key,
                  "--peer", "seller:shop.example", "--text", "hello")
    assert encrypt.returncode == 0, encrypt.stderr
    assert state.read_bytes().startswith(MAGIC)  # the commit (ATC) sealed it again

    assert "wrong state key" in one_error_line(
        run("card", "info", "--state", state, "--state-key-file", wrong))
    assert "is sealed" in one_error_line(run("card", "info", "--state", state))
    assert "wrong state key" in one_error_line(
        run("card", "serve", "--state", state, "--state-key-file", wrong, "--vpcd",
            "127.0.0.1:9", timeout=30))
    assert "wrong state key" in one_error_line(
        run("card", "info", "--reader", f"inprocess:{state}", "--state-key-file", wrong))
    short = tmp_path / "short.key"
    short.write_bytes(b"password")
    result = run("card", "info", "--state", state, "--state-key-file", short)
    assert result.returncode == 2 and "16 to 4096 bytes" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plain_card_is_sealed_in_place(home: Path, tmp_path: Path) -> None:
    state, key = tmp_path / "card.json", tmp_path / "card.key"
    key.write_bytes(os.urandom(32))
    assert run("card", "new", "--home", home, "--state", state).returncode == 0
    personalise(home, state)
    assert state.read_bytes().startswith(b"{")
    assert "not sealed" in one_error_line(
        run("card", "info", "--state", state, "--state-key-file", key))
    sealed = run("card", "seal", "--state", state, "--state-key-file", key)
    assert sealed.returncode == 0, sealed.stderr
    assert state.read_bytes().startswith(MAGIC)
    info = run("card", "info", "--state", state, "--state-key-file", key)
    assert info.returncode == 0 and HOLDER in info.stdout, info.stderr
