"""Test hook, active only with this directory on PYTHONPATH: a card process
(`-m card_applet.serve`) starts SLOW_START seconds late, as on a loaded machine. It makes the
race between a port-scanning process and the card process a sure thing instead of a likely
one; the code under test is not changed."""

import time
from pathlib import Path

SLOW_START = 2.0

if b"card_applet.serve" in Path("/proc/self/cmdline").read_bytes():
    time.sleep(SLOW_START)
