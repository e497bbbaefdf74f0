"""The card's entry in pcsc-tools' ATR list, so `pcsc_scan` and `ATR_analysis` name it.

pcsc-tools reads the FIRST of these files that exists, not all of them:
$XDG_CACHE_HOME/smartcard_list.txt (default ~/.cache), ~/.smartcard_list.txt,
/usr/local/pcsc/..., /usr/share/pcsc/smartcard_list.txt. A per-user list therefore has to be
a whole list: installing starts from the system list when the user has none, and only adds
the card's lines to a list the user already has. Format: an ATR line (hex bytes, regex
allowed), tab-indented description lines, a blank line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from card_applet.atr import ATR, ATR_CRC

SYSTEM_LIST = Path("/usr/share/pcsc/smartcard_list.txt")
DESCRIPTION = "nettx virtual smart card (EP 0791901 network transaction applet, T=1)"


def _hex(atr: bytes) -> str:
    return atr.hex(" ").upper()


def entry() -> str:
    """The card's lines: both ATRs it answers with (LRC, and CRC on noisy serial lines)."""
    return "".join(f"{_hex(atr)}\n\t{DESCRIPTION}{note}\n\n"
                   for atr, note in ((ATR, ""), (ATR_CRC, ", CRC epilogue")))


def user_list_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    # as ATR_analysis decides: XDG_CACHE_HOME when set at all (even empty), else ~/.cache
    if "XDG_CACHE_HOME" in env:
        return Path(f"{env['XDG_CACHE_HOME']}/smartcard_list.txt")
    return Path(env.get("HOME", str(Path.home()))) / ".cache" / "smartcard_list.txt"


def install(path: Path, system_list: Path = SYSTEM_LIST) -> bool:
    """Add the card's lines to `path` (created from `system_list` if absent, so every other
    card stays known); False if they were there already. The file is replaced whole or not
    at all."""
    if path.exists():
        current = path.read_text(encoding="utf-8", errors="surrogateescape")
    elif system_list.exists():
        current = system_list.read_text(encoding="utf-8", errors="surrogateescape")
    else:
        current = ""
    if _hex(ATR) in current and _hex(ATR_CRC) in current:
        return False
    if current and not current.endswith("\n\n"):
        current += "\n" if current.endswith("\n") else "\n\n"
    data = (current + entry()).encode("utf-8", errors="surrogateescape")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".smartcard_list.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)  # a file object's write loops until every byte is written
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # it is a public list, as the system's is
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
