"""Issue 11 item 2 on a real filesystem: a 4 MiB tmpfs in a private mount namespace
(`unshare --mount`; as root, or as a user mapped to root in a user namespace), filled to
leave one page, less than the card's state.

The card answers 6581 to every command that must write (ENCIPHER, a wrong VERIFY, CHANGE
PIN, RESET RETRY COUNTER), never 9000 or 63Cx; its file stays whole; the centre's writes fail
cleanly with the old files in place; when the space comes back everything works again.
Under CI=true a missing capability (no root, no user namespaces) is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from card_applet.vocabulary import ATC_BLOCK
from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
SIZE = "4m"


def unshare() -> list[str]:
    """A private mount namespace: as root directly, otherwise inside a user namespace where
    this user is root (tmpfs may be mounted there)."""
    as_user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *as_user, "--mount", "--propagation", "private"]


def namespace_missing() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) not installed"
    probe = subprocess.run([*unshare(), "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.strip()}"
    return None


def test_a_full_disk_never_bricks_the_card_nor_the_centre(tmp_path: Path) -> None:
    missing = namespace_missing()
    if missing is not None:
        unavailable(missing)
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = ('mount -t tmpfs -o size="$1",mode=0700 nettx-full "$2" '
              '&& exec "$3" -m tests.e2e.diskfull "$2"')
    run = subprocess.run([*unshare(), "sh", "-c", script, "sh", SIZE, str(mnt), sys.executable],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["free_when_full"] < facts["state_size"], facts

    # the card: a memory failure, state unchanged, in the file and in memory
    for command in ("encipher", "wrong_verify", "change_pin", "unblock"):
        assert facts[command] == "6581", (command, facts)
    assert facts["state_intact"] and facts["memory_is_file"], facts
    # the centre: refusals, old files in place, nothing left behind
    for write in ("issue", "row_file", "reinit"):
        assert "No space" in facts[write] or "full" in facts[write], (write, facts)
    assert facts["registry_intact"] and facts["master_intact"], facts
    assert facts["leftovers"] == [], facts
    assert facts["free_after_failures"] == facts["free_when_full"], facts

    # space back: the same card, its PIN, its counter one on, a wrong PIN counted again
    assert facts["after_verify"] == "9000"
    assert facts["after_encipher"] == "9000"
    assert facts["after_wrong_verify"] == "63C2"
    assert facts["after_change_pin"] == "9000"
    assert facts["after_atc"][1] == facts["after_atc"][0] + ATC_BLOCK  # the next block
    assert facts["after_issue"] == "ok"
    assert not (mnt / "card.json").exists()  # all of it happened on the private tmpfs
