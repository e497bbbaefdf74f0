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
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from card_applet.atr import ATR, ATR_CRC, ATR_DUAL, ATR_T0, AtrError, AtrFault, parse_atr

SYSTEM_LIST = Path("/usr/share/pcsc/smartcard_list.txt")
DESCRIPTION = "nettx virtual smart card (EP 0791901 network transaction applet, T=1)"


def _hex(atr: bytes) -> str:
    return atr.hex(" ").upper()


CARD_ATRS = ((ATR, ""), (ATR_CRC, ", CRC epilogue"),
             (ATR_DUAL, ", serial line offering T=0 and T=1"), (ATR_T0, ", serial line, T=0 only"))
_PLAIN_ATR = re.compile(r"[0-9A-F]{2}( [0-9A-F]{2})*")


def entry() -> str:
    """The card's lines: every ATR it answers with (LRC, CRC on noisy serial lines, and the
    serial line's T=0 variants)."""
    return "".join(f"{_hex(atr)}\n\t{DESCRIPTION}{note}\n\n" for atr, note in CARD_ATRS)


def listed_atrs(path: Path = SYSTEM_LIST) -> list[bytes]:
    """The ATRs of a list, one per ATR line; lines that are patterns (`..`, `[...]`: many
    cards of a family) are left out, since they are no one card's bytes."""
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    return [bytes.fromhex(line) for line in text.splitlines()
            if _PLAIN_ATR.fullmatch(line.strip()) and line == line.lstrip()]


@dataclass
class AtrSurvey:
    """How `parse_atr` fares on many ATRs: accepted, refused (by fault), and crashes (any
    exception but AtrError: always a bug)."""

    accepted: int = 0
    refused: Counter[AtrFault] = field(default_factory=Counter)
    examples: dict[AtrFault, bytes] = field(default_factory=dict)
    crashed: list[tuple[bytes, str]] = field(default_factory=list)

    def add(self, raw: bytes) -> None:
        try:
            atr = parse_atr(raw)
            for name in ("protocols", "specific_mode", "extra_guard_time", "bwi", "cwi", "edc",
                         "fi_di", "ifsc", "wi"):
                getattr(atr, name)  # what a reader reads next: a reserved value refuses it
        except AtrError as exc:
            self.refused[exc.fault] += 1
            self.examples.setdefault(exc.fault, raw)
        except Exception as exc:  # counted: the survey fails on any
            self.crashed.append((raw, f"{type(exc).__name__}: {exc}"))
        else:
            self.accepted += 1

    @property
    def total(self) -> int:
        return self.accepted + sum(self.refused.values()) + len(self.crashed)

    def lines(self) -> list[str]:
        out = [f"{self.total} ATRs: {self.accepted} accepted, {sum(self.refused.values())} "
               f"refused, {len(self.crashed)} crashed"]
        for fault, count in self.refused.most_common():
            out.append(f"  refused, {fault.value}: {count} (e.g. {_hex(self.examples[fault])})")
        out += [f"  CRASH {_hex(raw)}: {why}" for raw, why in self.crashed]
        return out


def survey(atrs: list[bytes]) -> AtrSurvey:
    result = AtrSurvey()
    for raw in atrs:
        result.add(raw)
    return result


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
    if all(_hex(atr) in current for atr, _note in CARD_ATRS):
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
