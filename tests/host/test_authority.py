"""The trusted centre: its files, the vectors, batch issuance, the registry, card manufacture."""

from __future__ import annotations

import json
import random
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from card_applet import blom
from card_applet.keys import diversify_transport_key
from card_applet.state import read_state
from card_applet.vocabulary import Lifecycle
from host.centre import issuance
from host.centre.authority import (
    BATCH,
    ROWS_DIR,
    Authority,
    Master,
    read_row_file,
    row_file_name,
    write_row_file,
    write_row_files,
)
from host.cli.main import main
from host.errors import AuthorityError

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "vectors" / "blom-v1.json"


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS_PATH.read_text())


@pytest.fixture
def centre(tmp_path: Path) -> Authority:
    authority = Authority(home=tmp_path)
    authority.init(k=4)
    return authority


@pytest.fixture
def vector_centre(tmp_path: Path, vectors: dict) -> Authority:
    authority = Authority(home=tmp_path)
    authority.init(master=Master.from_json(vectors))
    return authority


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def seeded_master(k: int, seed: int) -> Master:
    rnd = random.Random(seed)
    return Master.from_upper([[rnd.randrange(blom.P) for _ in range(k - i)]
                              for i in range(k)])


# -- files ------------------------------------------------------------------------------------


def test_init_writes_secret_files_0600_and_a_registry(tmp_path: Path) -> None:
    authority = Authority(home=tmp_path)
    master = authority.init(k=8)

    assert master.k == 8
    for name in ("master.bin", "transport.key"):
        assert mode_of(tmp_path / "authority" / name) == 0o600, name
    assert mode_of(tmp_path / "authority" / "registry.db") == 0o600
    assert mode_of(tmp_path / "authority") & 0o077 == 0
    assert authority.registered() == []
    assert len(authority.transport_master) == 32
    assert Authority(home=tmp_path).master == master  # reread from master.bin


def test_init_twice_refuses_unless_forced(tmp_path: Path) -> None:
    authority = Authority(home=tmp_path)
    first = authority.init(k=4)
    authority.issue(["seller:shop.example"])

    with pytest.raises(AuthorityError, match="already exists"):
        Authority(home=tmp_path).init(k=4)
    assert Authority(home=tmp_path).master == first

    second = Authority(home=tmp_path).init(k=4, force=True)
    assert second != first
    assert Authority(home=tmp_path).registered() == []  # the old registry went with it


def test_an_uninitialised_home_is_an_authority_error(tmp_path: Path) -> None:
    authority = Authority(home=tmp_path / "nowhere")
    for action in (lambda: authority.master, lambda: authority.transport_master,
                   authority.registered, lambda: authority.issue(["seller:a"]),
                   lambda: authority.pair_key("seller:a", "holder:b"),
                   lambda: authority.manufacture_card(tmp_path / "card.json")):
        with pytest.raises(AuthorityError, match="authority init"):
            action()


# -- the master and the vectors ---------------------------------------------------------------


def test_master_round_trips_through_json() -> None:
    master = Master.generate(5)
    assert Master.from_json(json.loads(json.dumps(master.to_json()))) == master
    matrix = master.matrix()
    assert all(matrix[i][j] == matrix[j][i] for i in range(5) for j in range(5))


@pytest.mark.parametrize("doc", [
    {},
    {"master_upper_triangle_hex": []},
    {"master_upper_triangle_hex": [["01", "02"], ["03", "04"]]},  # not a triangle
    {"master_upper_triangle_hex": [["01", "02"], ["zz"]]},
    {"master_upper_triangle_hex": [["01", "02"], ["03"]], "k": 3},
    {"master_upper_triangle_hex": [[f"{blom.P:x}"]]},  # not reduced mod p
    {"master_upper_triangle_hex": "0102"},
])
def test_master_from_json_refuses_bad_documents(doc: dict) -> None:
    with pytest.raises(AuthorityError):
        Master.from_json(doc)


@pytest.mark.parametrize("k", [0, 4097])
def test_master_generate_refuses_k_out_of_range(k: int) -> None:
    with pytest.raises(AuthorityError):
        Master.generate(k)


def test_vector_rows_are_reproduced_exactly(vector_centre: Authority, vectors: dict) -> None:
    parties = vectors["parties"]
    ids = [p["id"] for p in parties]

    issued = vector_centre.issue(ids)

    for party in parties:
        expected = [int(h, 16) for h in party["row_hex"]]
        x = int(party["x_hex"], 16)
        assert blom.x_of(party["id"]) == x
        assert issued[party["id"]] == expected
        assert vector_centre.rows_for([x]) == [expected]
        assert blom.row_for(vector_centre.master.matrix(), x) == expected


def test_vector_pair_keys_are_reproduced(vector_centre: Authority, vectors: dict) -> None:
    rows = {p["id"]: [int(h, 16) for h in p["row_hex"]] for p in vectors["parties"]}
    for pair in vectors["pairs"]:
        a, b = pair["a"], pair["b"]
        element = int(pair["shared_element_hex"], 16)
        assert blom.shared_element(rows[a], blom.x_of(b)) == element
        assert blom.shared_element(rows[b], blom.x_of(a)) == element
        assert vector_centre.pair_key(a, b).hex() == pair["pair_key_hex"]
        assert vector_centre.pair_key(b, a).hex() == pair["pair_key_hex"]


# -- batch issuance against the reference evaluation ------------------------------------------


@pytest.mark.parametrize(("k", "count"), [(1, 3), (2, 5), (7, 9), (64, 4), (4, BATCH),
                                          (4, BATCH + 1), (64, BATCH + 6)])
def test_batch_issuance_equals_reference_rows(tmp_path: Path, k: int, count: int) -> None:
    authority = Authority(home=tmp_path)
    master = seeded_master(k, seed=k * 1000 + count)
    authority.init(master=master)
    ids = [f"holder:{n}@batch.example" for n in range(count)]
    batches: list[int] = []

    rows = authority.issue(ids, progress=batches.append)

    assert sum(batches) == count
    assert batches == [min(BATCH, count - start) for start in range(0, count, BATCH)]
    matrix = master.matrix()
    for ident in ids:
        assert rows[ident] == blom.row_for(matrix, blom.x_of(ident)), ident
    assert {r[0] for r in authority.registered()} == set(ids)


@pytest.mark.parametrize(("k", "block"), [(1, 1), (5, 1), (9, 2), (17, 4), (37, 8), (40, 8),
                                          (64, 63), (70, 70)])
def test_blockwise_issuance_equals_reference_rows(k: int, block: int) -> None:
    # the default block is 256 elements a side, so the small centres of the other tests
    # are one block: here blocks that divide k, that do not, of one element, and the whole
    master = seeded_master(k, seed=k * 7 + block)
    xs = [blom.x_of(f"holder:{n}@blocks.example") for n in range(5)]
    matrix = master.matrix()
    assert issuance.rows_for(master, xs, block) == [blom.row_for(matrix, x) for x in xs]


def test_row_files_are_json_as_json_writes_it(tmp_path: Path) -> None:
    # the row file is built without json's (slow, indented) encoder: it must still be
    # exactly what json.dumps(indent=1) writes, escapes included
    rows = {"holder:zoë@example.org": [0, 1, blom.P - 1], 'seller:"q"\\x': [7],
            "issuer:\u4e2d\u6587/\t": list(range(40))}
    paths = [(tmp_path / row_file_name(i), i, row) for i, row in rows.items()]
    write_row_files(paths)
    for path, ident, row in paths:
        doc = {"format": 1, "id": ident, "k": len(row), "row_hex": [f"{v:064x}" for v in row]}
        assert path.read_bytes() == json.dumps(doc, indent=1).encode()
        assert read_row_file(path) == (ident, row)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_issued_rows_agree_on_pair_keys(centre: Authority) -> None:
    ids = ["holder:bob@example.org", "seller:shop.example", "delivery:parcel.example"]
    rows = centre.issue(ids)
    for a in ids:
        for b in ids:
            if a == b:
                continue
            element = blom.shared_element(rows[a], blom.x_of(b))
            assert element == blom.shared_element(rows[b], blom.x_of(a))
            assert blom.pair_key(element, a, b) == centre.pair_key(a, b)


# -- the registry -----------------------------------------------------------------------------


def test_an_issued_identifier_is_refused_again(centre: Authority) -> None:
    centre.issue(["seller:shop.example"])
    with pytest.raises(AuthorityError, match="already issued"):
        centre.issue(["seller:shop.example"])
    assert [r[0] for r in centre.registered()] == ["seller:shop.example"]


def test_already_issued_says_where_the_row_file_is(centre: Authority) -> None:
    # the default directory of `nettx authority issue`: the refusal names the file
    rows = centre.dir.parent / ROWS_DIR
    write_row_file(rows / row_file_name("seller:shop.example"), "seller:shop.example",
                   centre.issue(["seller:shop.example"])["seller:shop.example"])
    with pytest.raises(AuthorityError) as refused:
        centre.issue(["seller:shop.example"])
    assert f"its row file is {rows / 'seller_shop.example.row.json'}" in str(refused.value)
    # issued elsewhere (--out): the file's name, and that the issue's --out holds it
    centre.issue(["issuer:bank.example"])
    with pytest.raises(AuthorityError,
                       match=r"its row file is issuer_bank\.example\.row\.json in the "
                             r"directory that issue wrote to \(--out"):
        centre.issue(["issuer:bank.example"])
    # onto a card: the row never leaves it, and the refusal names the card
    centre.register(["holder:carol@example.org"], serial=bytes.fromhex("0102030405060708"))
    with pytest.raises(AuthorityError, match="issued onto card 0102030405060708"):
        centre.issue(["holder:carol@example.org"])


def test_the_cli_says_where_an_issued_row_went(tmp_path: Path) -> None:
    # re-issuing into another --out directory used to answer a bare "already issued"
    runner = CliRunner()
    home = tmp_path / "home"
    assert runner.invoke(main, ["authority", "init", "--home", str(home), "--k", "4"]
                         ).exit_code == 0
    assert runner.invoke(main, ["authority", "issue", "--home", str(home),
                                "seller:shop.example"]).exit_code == 0
    again = runner.invoke(main, ["authority", "issue", "--home", str(home), "--out",
                                 str(tmp_path / "rows"), "seller:shop.example"])
    assert again.exit_code == 1
    assert "already issued" in again.output
    assert str(home / "rows" / "seller_shop.example.row.json") in again.output


def test_a_batch_with_a_repeat_is_refused_and_registers_nothing(centre: Authority) -> None:
    with pytest.raises(AuthorityError, match="repeats"):
        centre.issue(["seller:a", "seller:b", "seller:a"])
    assert centre.registered() == []


def test_a_batch_with_one_issued_id_registers_nothing(centre: Authority) -> None:
    centre.issue(["seller:b"])
    with pytest.raises(AuthorityError, match="already issued"):
        centre.issue(["seller:a", "seller:c", "seller:b", "seller:d"])
    assert [r[0] for r in centre.registered()] == ["seller:b"]
    centre.issue(["seller:a"])  # refused batches leave the others issuable


@pytest.mark.parametrize("bad", ["", "x" * 65, "é" * 33])
def test_a_bad_identifier_is_refused_and_registers_nothing(centre: Authority, bad: str) -> None:
    with pytest.raises(AuthorityError):
        centre.issue(["seller:ok", bad])
    assert centre.registered() == []


def test_the_longest_identifier_is_accepted(centre: Authority) -> None:
    longest = "h" * blom.MAX_ID_BYTES
    assert list(centre.issue([longest])) == [longest]


def test_register_records_the_card_serial(centre: Authority) -> None:
    centre.register(["holder:carol@example.org"], serial=bytes.fromhex("0102030405060708"))
    ((ident, x, serial, _at),) = centre.registered()
    assert (ident, serial) == ("holder:carol@example.org", "0102030405060708")
    assert int(x, 16) == blom.x_of(ident)
    with pytest.raises(AuthorityError):
        centre.register(["holder:carol@example.org"])


# -- cards ------------------------------------------------------------------------------------


def test_manufacture_card_writes_a_blank_card_with_a_diversified_key(
        centre: Authority, tmp_path: Path) -> None:
    path = tmp_path / "cards" / "blank.json"

    serial = centre.manufacture_card(path)

    state = read_state(path)
    assert state.serial == serial and len(serial) == 8
    assert state.lifecycle == Lifecycle.PERSONALISATION
    assert state.row is None and state.holder_id is None and state.pin_hash is None
    assert state.transport_key == diversify_transport_key(centre.transport_master, serial)
    assert state.transport_key != centre.transport_master
    assert mode_of(path) == 0o600


def test_manufacture_card_refuses_to_overwrite(centre: Authority, tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    centre.manufacture_card(path)
    before = path.read_bytes()
    with pytest.raises(AuthorityError, match="already holds a card"):
        centre.manufacture_card(path)
    assert path.read_bytes() == before


def test_every_card_gets_its_own_serial_and_key(centre: Authority, tmp_path: Path) -> None:
    serials = {centre.manufacture_card(tmp_path / f"{n}.json") for n in range(5)}
    keys = {read_state(tmp_path / f"{n}.json").transport_key for n in range(5)}
    assert len(serials) == len(keys) == 5


# -- row files --------------------------------------------------------------------------------


def test_row_file_round_trip(tmp_path: Path) -> None:
    row = [0, 1, blom.P - 1, 12345]
    path = tmp_path / "rows" / "seller.row.json"
    write_row_file(path, "seller:shop.example", row)
    assert read_row_file(path) == ("seller:shop.example", row)
    assert mode_of(path) == 0o600


@pytest.mark.parametrize("content", [
    "not json",
    "[]",
    '{"id": "seller:a"}',
    '{"row_hex": ["01"]}',
    '{"id": "seller:a", "row_hex": []}',
    '{"id": "seller:a", "row_hex": ["zz"]}',
    '{"id": "seller:a", "row_hex": "01"}',  # a string is not read digit by digit
    '{"id": 7, "row_hex": ["01"]}',
    '{"id": "", "row_hex": ["01"]}',
    '{"id": "seller:a", "row_hex": [1]}',
    '{"id": "seller:a", "row_hex": ["-01"]}',
    f'{{"id": "seller:a", "row_hex": ["{blom.P:x}"]}}',
])
def test_bad_row_files_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.row.json"
    path.write_text(content)
    with pytest.raises(AuthorityError, match=r"bad\.row\.json"):
        read_row_file(path)


def test_a_missing_row_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthorityError, match="not a row file"):
        read_row_file(tmp_path / "absent.row.json")
