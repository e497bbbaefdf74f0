"""Issue 10 item 1, the channel: a local process racing for the embedded reader's port.

`nettx card info --state F` (and `nettx buy`, in test_transaction.py) start their own card
process. The attacker (portsnatch.py) connects to every new loopback listener of this test's
process tree the moment it shows in /proc/net/tcp, and plays a card of its own. The card
process is made to start 2 s late (slow_card_start/), so on a listening embedded reader the
attacker wins every time; with the socketpair there is nothing to connect to.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from card_applet.state import read_state
from tests.e2e.portsnatch import (
    make_fake_card,
    received_bytes,
    slow_card_env,
    snatching,
)
from tests.e2e.slow_card_start.sitecustomize import SLOW_START
from tests.e2e.support import HOLDER


def test_card_info_cannot_be_answered_by_a_racing_process(card_file: Path,
                                                          tmp_path: Path) -> None:
    fake = make_fake_card(tmp_path, HOLDER)
    with snatching(tmp_path, fake) as finish:
        started = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "host.cli", "card", "info", "--state",
                              str(card_file)], capture_output=True, text=True, timeout=60,
                             env=slow_card_env())
        took = time.monotonic() - started
        report = finish()
    assert report["frames"] == {}, report  # nothing was taken for the card
    assert received_bytes(report) == b""
    assert report["connected"] == [], report  # nothing of ours listened
    assert took >= SLOW_START  # and the card process really was late: the race was open
    assert run.returncode == 0, run.stdout + run.stderr
    # the real card answered, not the attacker's
    assert read_state(card_file).serial.hex() in run.stdout
    assert read_state(fake).serial.hex() not in run.stdout
