"""`nettx demo`: the narrated transaction runs to completion, again in a kept home."""

from __future__ import annotations

from pathlib import Path

import psycopg
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
    # the flow of FIG. 1, from the seller's log (the demo runs it with --flow)
    assert "relayed challenge" in out and "authorise: sealed data + seller's MAC" in out


def test_demo_can_run_again_in_a_kept_home(tmp_path: Path) -> None:
    for _ in range(2):
        run = nettx_process("demo", "--k", "8", "--home", tmp_path / "kept", home=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "demo complete" in run.stdout


def test_demo_on_postgresql_with_two_instances(pg_url: str, tmp_path: Path) -> None:
    """The same purchase and the same refusals with the stores on PostgreSQL, the card manager
    and the seller as two instances each: the replay and the swap go to the second pair."""
    for _ in range(2):  # a second run on the same database starts from fresh stores
        run = nettx_process("demo", "--k", "16", "--db", pg_url, "--home", tmp_path / "kept",
                            home=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
        out = " ".join(run.stdout.split())
        assert "demo complete" in out
        assert out.count("(instance 1 of 2, on PostgreSQL)") == 2  # a card manager, a seller
        assert out.count("(instance 2 of 2, on PostgreSQL)") == 2
        assert out.count("refused:") == 7
        assert "replayed, at the other seller instance refused: replay" in out
        assert "swapped into order 2, at the other seller instance refused: order 2 failed: " \
               "forged" in out
        assert "450.10 EUR = 500.00 - 49.90 for order 1; none of the attacks moved it" in out
    assert not list((tmp_path / "kept").glob("seller*.sqlite"))  # the honest stores: PostgreSQL
    assert (tmp_path / "kept" / "issuer-2.log").exists()
    with psycopg.connect(pg_url) as conn:  # the second run's one debit, none of the first's
        row = conn.execute("SELECT count(*) FROM nettx_ledger.authorisations "
                           "WHERE code = 'approved'").fetchone()
    assert row == (1,)


def test_demo_refuses_a_db_that_is_not_postgresql(tmp_path: Path) -> None:
    run = nettx_process("demo", "--db", tmp_path / "x.sqlite", home=tmp_path)
    assert run.returncode != 0
    assert "postgresql://" in run.stderr and "Traceback" not in run.stderr
