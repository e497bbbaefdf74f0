"""The three parties with their databases on real disks that fill up: small tmpfs mounts in a
private mount namespace (root, `unshare --mount`; under CI a missing capability fails)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]


def namespace_unavailable() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.strip()}"
    return None


def test_parties_answer_internal_on_a_full_disk_and_complete_once_space_returns(
        tmp_path: Path) -> None:
    missing = namespace_unavailable()
    if missing:
        unavailable(missing)
    home, centre = tmp_path / "home", tmp_path / "centre"
    for d in (home / "issuer", home / "delivery", home / "seller", centre):
        d.mkdir(parents=True)
    mounts = " && ".join(f"mount -t tmpfs -o size=1m tmpfs {home / role}"
                         for role in ("issuer", "delivery", "seller"))
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'{mounts} && exec "$0" -m tests.host.full_disk_probe "$1" "$2"',
         sys.executable, str(home), str(centre)],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["warm-up"] == "completed"
    # the card manager's or the delivery company's disk full: the order waits, then completes
    for role in ("issuer", "delivery"):
        assert result[role] == {"told": "pending", "meanwhile": "pending", "after": "completed"}
    # the seller's own disk full: it cannot record the order, says `internal`, keeps serving
    assert result["seller"] == {"told": "error internal", "meanwhile": None,
                                "after": "completed"}
    # one debit and one shipment per completed order, nothing else
    assert result["debits"] == result["shipments"] == 4
    assert result["orders"] == 4
