"""The layer contracts (pyproject.toml, [tool.importlinter]; docs/architecture.md): they hold
for the tree as it is, and each one fails when a wrong arrow is drawn, so a contract that
stopped checking anything would fail here rather than pass quietly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("card_applet", "terminal", "host")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_every_layer_contract() -> None:
    run = lint_imports(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "BROKEN" not in run.stdout and " KEPT" in run.stdout


# (file to change, the line a careless change adds, the contract that must catch it)
WRONG_ARROWS = [
    ("terminal/session.py", "import host.errors", "imports point down only"),
    ("card_applet/state.py", "import terminal.errors", "imports point down only"),
    ("host/storage/shipments.py", "from host.protocol import codec",
     "host.storage imports no protocol and no party"),
    ("host/protocol/money.py", "import sqlite3", "host.protocol is pure"),
    ("host/protocol/order.py", "import asyncio", "host.protocol is pure"),
    ("host/parties/keymodule.py", "import host.cli.kit", "cli -> parties"),
    ("card_applet/apdu.py", "import socket", "The applet core is sans-IO"),
    ("host/protocol/codec.py", "import host.protocol.envelope", "No import circle"),
]


@pytest.mark.parametrize(("path", "line", "contract"), WRONG_ARROWS,
                         ids=[f"{p}:{line}" for p, line, _ in WRONG_ARROWS])
def test_a_wrong_arrow_breaks_its_contract(tmp_path: Path, path: str, line: str,
                                           contract: str) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / path
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0, run.stdout
    broken = run.stdout.split("Broken contracts")[-1]
    assert contract in broken, run.stdout
