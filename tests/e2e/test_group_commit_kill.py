"""kill -9 of the seller and of the card manager inside a group commit, with several holders'
orders in the batch, on either side of its COMMIT; then restart, and check that no decision a
holder was told of is lost and nothing undecided is half-written.

Eight holders buy at once (the chaos run's machinery, tests/e2e/chaos.py), so the parties'
decisions queue together into group commits (host.storage.group_commit). The seller and the
card manager are started with a crash point inside the group commit
(host.parties.durability.crash_in_batch): each pauses, then kills itself with SIGKILL, in its
first batch of at least CRASH_BATCH decisions once its first batches are past, either with
every decision written and COMMIT not yet run (`group-commit-written`: the batch must vanish
whole, none of it answered) or with COMMIT done and no answer released yet
(`group-commit-durable`: the batch must stand whole, its peers' retries answered from the
record). Decisions of one order are made one after another, so a batch's decisions are those
of as many different orders. The crash points are armed (a plain restart) once holders have
been told outcomes. Each victim is restarted on its port without the crash point while the
holders keep buying, but first, before anything can repair it, its database is read as the
kill left it: every outcome a holder had been told stands there, and (the seller's) every
request the card manager and the delivery company acted on rests on a move the seller had
made durable. Then, everything settled, the three databases are read directly and checked as
after a chaos run: every outcome a holder was told (by `order` or by `status`) agrees with
the card manager's ledger, the shipments and the seller's record; no debit without the
seller's order; balances are the initial ones minus the debits that stand; nothing is left
unfinished.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from host.parties.durability import CRASH_BATCH, GROUP_COMMIT_POINTS
from tests.e2e.chaos import (
    FINAL,
    ChaosConfig,
    HolderRecord,
    Holders,
    Parties,
    Report,
    check,
    make_world,
    rows,
    wait_until_settled,
)

VICTIMS = ("issuer", "seller")  # the card manager and the seller
DIE_WITHIN = 90.0  # seconds for both to reach a large enough batch
TOLD_FIRST = 8  # outcomes told before the crash points are armed
AFTER = 3.0  # seconds the holders keep buying from the restarted parties
CRASH_LINE = re.compile(r"group commit of (\d+) decisions, (\w+): crash point ([\w-]+)")
#: what the card manager recorded for an outcome the holder was told
LEDGER_CODE = {"completed": "approved", "declined": "declined"}


def told_so_far(holders: Holders) -> int:
    with holders.lock:
        return sum(1 for r in holders.records if r.status in FINAL)


#: where an order must stand at the seller for the card manager to hold a decision on it, and
#: for the delivery company to hold a shipment: the request left only once this was durable
SENT_AFTER = {"issuer": ("authorising", "approved", "voiding", "completed", "declined",
                         "failed"),
              "delivery": ("approved", "voiding", "completed", "failed")}
LANDED = 0.5  # seconds for requests the seller sent before its death to reach the others


def sent_too_early(home: Path, config: ChaosConfig) -> list[str]:
    """The requests the card manager and the delivery company acted on that the seller's
    database, as its kill left it, does not account for: a request sent before the move that
    records it (AUTHORISING, APPROVED) was durable. A seller that resumed such an order from
    RECEIVED could fail it, overdue, with a debit standing."""
    status = dict(rows(config, home, "seller", "SELECT order_id, status FROM orders"))
    acted = {"issuer": rows(config, home, "issuer", "SELECT order_id FROM authorisations"),
             "delivery": rows(config, home, "delivery", "SELECT order_id FROM shipments")}
    return [f"{oid.hex()}: the {role} acted on it, the seller has {status.get(oid)}"
            for role, found in acted.items() for (oid,) in found
            if status.get(oid) not in SENT_AFTER[role]]


def lost_outcomes(home: Path, config: ChaosConfig, role: str,
                  told: list[HolderRecord]) -> list[str]:
    """The outcomes holders were told that `role`'s database, as its kill left it, does not
    hold: the seller's order at that final status; the card manager's decision behind it."""
    if role == "seller":
        have = dict(rows(config, home, role, "SELECT order_id, status FROM orders"))
        return [f"{r.order_id.hex()}: told {r.status}, the seller has {have.get(r.order_id)}"
                for r in told if r.status in FINAL and have.get(r.order_id) != r.status]
    codes = dict(rows(config, home, role, "SELECT order_id, code FROM authorisations"))
    return [f"{r.order_id.hex()}: told {r.status}, the card manager has "
            f"{codes.get(r.order_id)}" for r in told
            if r.status in LEDGER_CODE and codes.get(r.order_id) != LEDGER_CODE[r.status]]


@pytest.mark.parametrize("point", sorted(GROUP_COMMIT_POINTS))
def test_kill_9_inside_a_group_commit_loses_no_acknowledged_decision(
        tmp_path: Path, point: str) -> None:
    config = ChaosConfig(holders=8, grace=90.0)
    initial = make_world(tmp_path, config)
    parties = Parties(tmp_path, config)
    holders: Holders | None = None
    died: dict[str, int | None] = {}
    lost: list[str] = []
    told_before: dict[str, int] = {}
    try:
        for name in ("issuer", "delivery", "seller"):
            parties.start(name)
        holders = Holders(tmp_path, config, [parties.ports["seller"]])
        holders.start()
        deadline = time.monotonic() + DIE_WITHIN
        while told_so_far(holders) < TOLD_FIRST and time.monotonic() < deadline:
            time.sleep(0.05)
        for name in VICTIMS:  # armed: a plain stop, and a start with the crash point
            parties.procs[name].stop()
            parties.start(name, ["--crash-at", point])
        while len(died) < len(VICTIMS) and time.monotonic() < deadline:
            for name in VICTIMS:
                if name not in died and not parties.procs[name].alive():
                    died[name] = parties.procs[name].proc.returncode
                    parties.kill(name)  # reaped; its log closed
                    with holders.lock:
                        told = [r for r in holders.records if r.status in FINAL]
                    told_before[name] = len(told)
                    lost += lost_outcomes(tmp_path, config, name, told)
                    if name == "seller":
                        time.sleep(LANDED)
                        lost += sent_too_early(tmp_path, config)
                    parties.start(name)  # as it was, without the crash point
            time.sleep(0.02)
        time.sleep(AFTER)
        holders.join()
        settle_by = time.monotonic() + config.grace
        wait_until_settled(config, tmp_path, settle_by)
        holders.settle(settle_by)
    finally:
        if holders is not None:
            holders.stop.set()
        parties.stop()
    assert holders is not None

    # each died by its own SIGKILL, inside a group commit of several orders' decisions
    assert died == {name: -signal.SIGKILL for name in VICTIMS}, died
    for name in VICTIMS:
        crashes = CRASH_LINE.findall((tmp_path / f"{name}.log").read_text())
        assert len(crashes) == 1, (name, crashes)
        decisions, at, named = crashes[0]
        assert int(decisions) >= CRASH_BATCH and at == GROUP_COMMIT_POINTS[point].value
        assert named == point

    assert lost == [], lost
    assert all(n > 0 for n in told_before.values()), told_before  # there was something to lose
    report = Report()
    check(tmp_path, initial, holders.records, report, config)
    figures = report.figures()
    assert report.violations == [], (figures, report.violations[:20])
    assert report.stuck == 0, figures
    # the run did what it is for: holders were told outcomes before and after the kills
    told = [r for r in holders.records if r.status in ("completed", "declined")]
    assert len(told) >= 2 * config.holders, figures
    assert report.seller_status["completed"] > 0, figures
