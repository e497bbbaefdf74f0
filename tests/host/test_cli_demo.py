"""`nettx demo`: the narrated transaction runs to completion, again in a kept home."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.host.cli_helpers import (
    nettx_process,
)

pytestmark = pytest.mark.usefixtures("restore_process_state")


def test_demo_runs_to_completion(tmp_path: Path) -> None:
    run = nettx_process("demo", "--k", "16", home=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "demo complete" in run.stdout
    assert "Traceback" not in run.stderr
    out = " ".join(run.stdout.split())  # rich wraps long lines
    assert "status │ completed" in out or "completed" in out
    # the four attacks of the issue (the seller's two ways to the card number count as one),
    # a rogue seller at another address and an on-path swap of the delivery company
    assert out.count("refused:") == 7
    for reason in ("forged", "policy hands card_number to the seller", "replay",
                   "unconfirmed", "is seller:rogue.example, not seller:shop.example",
                   "the order form is not seller:shop.example's"):
        assert reason in out, reason
    assert "none of the attacks moved it" in out


def test_demo_can_run_again_in_a_kept_home(tmp_path: Path) -> None:
    for _ in range(2):
        run = nettx_process("demo", "--k", "8", "--home", tmp_path / "kept", home=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "demo complete" in run.stdout
