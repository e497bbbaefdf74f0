"""Issue 11 item 2 for the centre's files: master, transport key, row files (write_secret).
A write the disk cuts short replaces nothing: the old file stays whole, no temporary file is
left, the error reaches the caller (and the CLI as one line)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from host.centre.authority import Authority, read_row_file, write_row_file
from host.centre.files import write_secret
from host.cli import main as cli
from tests.diskfaults import FullDisk

CENTRE_FILES = ("master.bin", "transport.key")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("free", [0, 50, 4000])
def test_a_cut_write_secret_replaces_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             free: int) -> None:
    path = tmp_path / "secret.key"
    old = os.urandom(8000)
    write_secret(path, old)
    monkeypatch.setattr(os, "write", FullDisk(tmp_path, free))
    with pytest.raises(OSError):
        write_secret(path, os.urandom(8000))
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_centre_on_a_full_disk_keeps_its_master_and_transport_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    centre = Authority(tmp_path)
    centre.init(k=8)
    before = snapshot(centre.dir)
    monkeypatch.setattr(os, "write", FullDisk(tmp_path, 100))
    with pytest.raises(OSError):
        Authority(tmp_path).init(k=8, force=True)
    monkeypatch.undo()
    after = snapshot(centre.dir)
    for name in CENTRE_FILES:
        assert after[name] == before[name], name
    assert not [n for n in after if n.endswith(".tmp")]
    assert Authority(tmp_path).master.k == 8  # still loads


def test_a_row_file_on_a_full_disk_stays_whole(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rows" / "seller.row.json"
    write_row_file(path, "seller:a", list(range(1, 65)))
    monkeypatch.setattr(os, "write", FullDisk(tmp_path, 1000))
    with pytest.raises(OSError):
        write_row_file(path, "seller:a", list(range(2, 66)))
    monkeypatch.undo()
    assert read_row_file(path) == ("seller:a", list(range(1, 65)))
    assert [p.name for p in path.parent.iterdir()] == ["seller.row.json"]


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "write", FullDisk(tmp_path, 10))
    result = CliRunner().invoke(cli.main, ["authority", "init", "--home", str(tmp_path / "h"),
                                           "--k", "4"])
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "No space" in lines[0]
    assert not list((tmp_path / "h" / "authority").glob("*.tmp*"))
