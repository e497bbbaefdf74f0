"""The centre's master file (host/centre/master.py): compact, checked, atomic, 0600; an old
centre's master.json still works and is converted; a damaged or foreign file is one line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from card_applet import blom
from host.centre.authority import Authority
from host.centre.master import HEADER, MAGIC, SIZE, Master, elements
from host.errors import AuthorityError
from tests.card_applet.conftest import VECTORS_PATH
from tests.host.cli_helpers import assert_one_error_line, nettx, ok

pytestmark = pytest.mark.usefixtures("restore_process_state")


def centre(tmp_path: Path, k: int = 6) -> Authority:
    (tmp_path / "home").mkdir(mode=0o700)  # a looser home gets a warning line from the CLI
    authority = Authority(tmp_path / "home")
    authority.init(k=k)
    return authority


def test_file_is_header_and_32_bytes_an_element_of_the_triangle(tmp_path: Path) -> None:
    authority = centre(tmp_path, k=9)
    raw = authority.master_path.read_bytes()
    assert len(raw) == HEADER.size + elements(9) * SIZE == 48 + 45 * 32
    assert raw.startswith(MAGIC)
    assert stat.S_IMODE(authority.master_path.stat().st_mode) == 0o600
    master = authority.master
    assert raw[HEADER.size:] == b"".join(blom.element_to_bytes(master.entry(i, j))
                                         for i in range(9) for j in range(i, 9))
    assert Authority(authority.dir.parent).master == master


def test_json_round_trip_keeps_the_vectors_format() -> None:
    doc = json.loads(VECTORS_PATH.read_text())
    master = Master.from_json(doc)
    assert master.to_json()["master_upper_triangle_hex"] == doc["master_upper_triangle_hex"]
    assert master.upper == [[int(h, 16) for h in row] for row in
                            doc["master_upper_triangle_hex"]]


@pytest.mark.parametrize(("damage", "message"), [
    (lambda raw: raw[:-1], "truncated"),
    (lambda raw: raw[:HEADER.size + 5], "truncated"),
    (lambda raw: raw[:20], "header cut short"),
    (lambda raw: raw + b"\x00", "bytes after the body"),
    (lambda raw: raw[:-1] + bytes((raw[-1] ^ 1,)), "checksum"),
    (lambda raw: raw[:8] + b"\x00\x02" + raw[10:], "version 2"),
    (lambda raw: raw[:10] + b"\x10\x01" + raw[12:], "not a master file"),
    (lambda raw: b"\x89PNG\r\n\x1a\n" + raw[8:], "not a master file"),
    (lambda raw: b"", "not a master file"),
])
def test_damaged_or_foreign_file_is_one_line(tmp_path: Path, damage, message: str) -> None:
    authority = centre(tmp_path)
    authority.master_path.write_bytes(damage(authority.master_path.read_bytes()))
    with pytest.raises(AuthorityError, match=message) as caught:
        _ = Authority(authority.dir.parent).master
    assert "\n" not in str(caught.value)
    assert_one_error_line(nettx("authority", "issue", "--home", authority.dir.parent,
                                "seller:a"))


def test_element_not_below_p_with_a_good_checksum_is_refused(tmp_path: Path) -> None:
    authority = centre(tmp_path)
    forged = Master.__new__(Master)
    body = bytearray(authority.master.packed)
    body[SIZE : 2 * SIZE] = blom.P.to_bytes(SIZE, "big")
    object.__setattr__(forged, "k", 6)
    object.__setattr__(forged, "packed", bytes(body))
    authority.master_path.write_bytes(forged.header() + forged.packed)
    with pytest.raises(AuthorityError, match="not below p"):
        _ = Authority(authority.dir.parent).master


def test_an_old_json_master_is_read_then_converted(tmp_path: Path) -> None:
    """A centre made before master.bin: its master.json works, and the first command that
    reads it leaves master.bin (0600) in its place, with the same rows."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    authority = Authority(home)
    authority.init(master=Master.from_json(json.loads(VECTORS_PATH.read_text())))
    master = authority.master
    authority.master_path.unlink()
    authority.legacy_master_path.write_text(json.dumps(master.to_json()))
    authority.legacy_master_path.chmod(0o600)

    vectors = json.loads(VECTORS_PATH.read_text())
    pair = vectors["pairs"][0]
    assert ok(nettx("authority", "pair-key", "--home", home, pair["a"], pair["b"])) \
        == pair["pair_key_hex"] + "\n"
    assert authority.master_path.exists() and not authority.legacy_master_path.exists()
    assert stat.S_IMODE(authority.master_path.stat().st_mode) == 0o600
    assert Authority(home).master == master
    ok(nettx("authority", "issue", "--home", home, "seller:after.example"))


def test_conversion_that_cannot_write_keeps_the_json(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    authority = centre(tmp_path)
    master = authority.master
    authority.master_path.unlink()
    authority.legacy_master_path.write_text(json.dumps(master.to_json()))

    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("host.centre.authority.write_secret", full)
    assert Authority(authority.dir.parent).master == master
    assert authority.legacy_master_path.exists() and not authority.master_path.exists()


def test_init_imports_either_format(tmp_path: Path) -> None:
    ok(nettx("authority", "init", "--home", tmp_path / "a", "--master", VECTORS_PATH))
    first = Authority(tmp_path / "a")
    ok(nettx("authority", "init", "--home", tmp_path / "b", "--master", first.master_path))
    assert Authority(tmp_path / "b").master == first.master == Master.from_json(
        json.loads(VECTORS_PATH.read_text()))


def test_generated_master_is_reduced_and_uniform_looking() -> None:
    master = Master.generate(64)
    values = [master.element(n) for n in range(elements(64))]
    assert all(0 <= v < blom.P for v in values)
    assert len(set(values)) == len(values)
    assert max(values).bit_length() == 255  # the top bit is cleared, not the next one
