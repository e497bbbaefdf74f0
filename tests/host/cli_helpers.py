"""What the `nettx` CLI test modules share: running the command in this process (CliRunner)
and as a real process, the shapes of a refusal, and a centre home with a personalised card.

Commands that talk to a card start their own card process on the embedded reader (a child
of this process, stopped by PID when the command ends), exactly as a user's shell would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from host.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
VECTORS_PATH = REPO / "docs" / "vectors" / "blom-v1.json"
HOLDER = "holder:alice@example.org"
SELLER = "seller:shop.example"
PIN, PUK = "1234", "12345678"
SELECT = "00A404000AF0455030373931393031"  # no Le: the FCI waits behind 61xx


def nettx(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """In this process; secrets (NETTX_PIN, ...) in `env`, never in the arguments."""
    return CliRunner().invoke(cli.main, [str(a) for a in args], env=env)


def nettx_process(*args: str | Path, home: Path,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real thing: a `nettx` process, its own stdout and stderr, its exit status."""
    return subprocess.run([sys.executable, "-m", "host.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NETTX_HOME": str(home), **(env or {})})


def pin(value: str = PIN) -> dict[str, str]:
    return {"NETTX_PIN": value}


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def assert_one_error_line(result: Result) -> str:
    """A refusal: exit 1, one line "error: ..." on stderr, nothing on stdout, no exception."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def assert_usage_error(result: Result) -> str:
    """click's own usage error: exit 2, "Usage:" and one "Error:" line, no exception."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Usage:" in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in result.output
    return line


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    ok(nettx("authority", "init", "--home", home, "--k", "8"))
    return home


def personalised_card(home: Path, path: Path, holder: str = HOLDER, pin: str = PIN,
                      puk: str = PUK) -> Path:
    ok(nettx("card", "new", "--home", home, "--state", path))
    ok(nettx("authority", "personalise", "--home", home, "--state", path, "--holder", holder,
             env={"NETTX_PIN": pin, "NETTX_PUK": puk}))
    return path


@pytest.fixture
def card(home: Path, tmp_path: Path) -> Path:
    return personalised_card(home, tmp_path / "alice.card.json")


# -- the centre -------------------------------------------------------------------------------

