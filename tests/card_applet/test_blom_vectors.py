"""The Blom / KPS scheme v1 against docs/vectors/blom-v1.json (the repository's copy of the
design's vectors), exactly (DESIGN.md "Key scheme"), plus symmetry as a property and
identifier validation."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card_applet import blom
from tests.card_applet.conftest import VECTORS_PATH, vectors


def master_from_upper(upper: list[list[str]]) -> list[list[int]]:
    """`upper[i][o]` is D[i][i + o]; D is symmetric."""
    k = len(upper)
    master = [[0] * k for _ in range(k)]
    for i, line in enumerate(upper):
        assert len(line) == k - i
        for o, value in enumerate(line):
            master[i][i + o] = master[i + o][i] = int(value, 16)
    return master


def parties() -> list[dict]:
    return vectors()["parties"]


def party_ids() -> list[str]:
    return [p["id"] for p in parties()]


def by_id(identifier: str) -> dict:
    (found,) = (p for p in parties() if p["id"] == identifier)
    return found


def row(identifier: str) -> list[int]:
    return [int(v, 16) for v in by_id(identifier)["row_hex"]]


def x(identifier: str) -> int:
    return int(by_id(identifier)["x_hex"], 16)


# -- the file itself --------------------------------------------------------------------------


def test_vectors_file_is_in_the_repository() -> None:
    assert VECTORS_PATH.is_file()
    assert VECTORS_PATH.parts[-3:] == ("docs", "vectors", "blom-v1.json")


def test_field_prime_and_k() -> None:
    doc = vectors()
    assert int(doc["field_prime"], 16) == blom.P == 2**255 - 19
    assert doc["k"] == 4
    assert len(doc["master_upper_triangle_hex"]) == 4
    assert all(len(p["row_hex"]) == 4 for p in parties())


def test_master_is_reduced() -> None:
    master = master_from_upper(vectors()["master_upper_triangle_hex"])
    assert all(0 <= v < blom.P for line in master for v in line)
    assert all(master[i][j] == master[j][i] for i in range(4) for j in range(4))


def test_every_pair_of_parties_has_a_vector() -> None:
    listed = {frozenset((pair["a"], pair["b"])) for pair in vectors()["pairs"]}
    assert listed == {frozenset(c) for c in itertools.combinations(party_ids(), 2)}
    assert len(vectors()["pairs"]) == 6


# -- x, rows, shared elements, pair keys ------------------------------------------------------


@pytest.mark.parametrize("identifier", party_ids())
def test_x_of_identifier(identifier: str) -> None:
    assert blom.x_of(identifier) == x(identifier)


@pytest.mark.parametrize("identifier", party_ids())
def test_x_matches_the_design_formula(identifier: str) -> None:
    digest = hashlib.sha256(b"EP0791901/blom/v1/id" + b"\x00" + identifier.encode()).digest()
    assert int.from_bytes(digest, "big") % (2**255 - 19) == x(identifier)


@pytest.mark.parametrize("identifier", party_ids())
def test_row_for_reproduces_the_row(identifier: str) -> None:
    master = master_from_upper(vectors()["master_upper_triangle_hex"])
    computed = blom.row_for(master, x(identifier))
    assert [f"{v:064x}" for v in computed] == by_id(identifier)["row_hex"]


@pytest.mark.parametrize("identifier", party_ids())
def test_row_bytes_round_trip(identifier: str) -> None:
    raw = blom.row_to_bytes(row(identifier))
    assert raw == b"".join(bytes.fromhex(v) for v in by_id(identifier)["row_hex"])
    assert blom.row_from_bytes(raw) == row(identifier)


@pytest.mark.parametrize("pair", vectors()["pairs"], ids=lambda p: f"{p['a']}~{p['b']}")
def test_shared_element_both_directions(pair: dict) -> None:
    expected = int(pair["shared_element_hex"], 16)
    assert blom.shared_element(row(pair["a"]), x(pair["b"])) == expected
    assert blom.shared_element(row(pair["b"]), x(pair["a"])) == expected


@pytest.mark.parametrize("pair", vectors()["pairs"], ids=lambda p: f"{p['a']}~{p['b']}")
def test_pair_key_both_orders(pair: dict) -> None:
    element = int(pair["shared_element_hex"], 16)
    expected = bytes.fromhex(pair["pair_key_hex"])
    assert blom.pair_key(element, pair["a"], pair["b"]) == expected
    assert blom.pair_key(element, pair["b"], pair["a"]) == expected
    assert blom.pair_key(element, pair["a"].encode(), pair["b"].encode()) == expected


def test_pair_keys_are_distinct() -> None:
    keys = [p["pair_key_hex"] for p in vectors()["pairs"]]
    assert len(set(keys)) == len(keys)


# -- symmetry for any master ------------------------------------------------------------------

elements = st.integers(min_value=0, max_value=blom.P - 1)
identifiers = st.text(min_size=1, max_size=64).filter(lambda s: len(s.encode()) <= 64)


@st.composite
def symmetric_masters(draw: st.DrawFn) -> list[list[int]]:
    k = draw(st.integers(min_value=1, max_value=6))
    master = [[0] * k for _ in range(k)]
    for i in range(k):
        for j in range(i, k):
            master[i][j] = master[j][i] = draw(elements)
    return master


@settings(max_examples=200, deadline=None)
@given(master=symmetric_masters(), a=identifiers, b=identifiers)
def test_shared_element_and_pair_key_are_symmetric(master: list[list[int]], a: str,
                                                    b: str) -> None:
    row_a, row_b = blom.row_for(master, blom.x_of(a)), blom.row_for(master, blom.x_of(b))
    assert len(row_a) == len(row_b) == len(master)
    e_ab = blom.shared_element(row_a, blom.x_of(b))
    e_ba = blom.shared_element(row_b, blom.x_of(a))
    assert e_ab == e_ba
    assert 0 <= e_ab < blom.P
    assert blom.pair_key(e_ab, a, b) == blom.pair_key(e_ba, b, a)
    assert len(blom.pair_key(e_ab, a, b)) == 32


@settings(max_examples=100, deadline=None)
@given(master=symmetric_masters(), a=identifiers)
def test_row_evaluates_the_bivariate_polynomial(master: list[list[int]], a: str) -> None:
    """e(a, b) = sum_ij D[i][j] x(a)^j x(b)^i: the row is the master evaluated at x(a)."""
    xa, xb = blom.x_of(a), blom.x_of("peer")
    direct = sum(master[i][j] * pow(xa, j, blom.P) * pow(xb, i, blom.P)
                 for i in range(len(master)) for j in range(len(master))) % blom.P
    assert blom.shared_element(blom.row_for(master, xa), xb) == direct


# -- identifiers and elements -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"", "", b"a" * 65, "a" * 65, "é" * 32 + "a", b"\xff",
                                 b"holder:\xc3", b"\xed\xa0\x80"])
def test_identifier_rejected(bad: str | bytes) -> None:
    with pytest.raises(blom.IdentifierError):
        blom.identifier_bytes(bad)
    with pytest.raises(blom.IdentifierError):
        blom.x_of(bad)
    with pytest.raises(blom.IdentifierError):
        blom.pair_key(1, bad, "seller:shop.example")


@pytest.mark.parametrize("good", ["a", "a" * 64, "é" * 32, "holder:ü"])
def test_identifier_accepted(good: str) -> None:
    assert blom.identifier_bytes(good) == good.encode()
    assert blom.identifier_bytes(good.encode()) == good.encode()


def test_element_encoding() -> None:
    assert blom.element_to_bytes(1) == bytes(31) + b"\x01"
    assert blom.element_from_bytes((blom.P - 1).to_bytes(32, "big")) == blom.P - 1
    with pytest.raises(ValueError, match="not reduced"):
        blom.element_from_bytes(blom.P.to_bytes(32, "big"))
    with pytest.raises(ValueError, match="32 bytes"):
        blom.element_from_bytes(bytes(31))


@pytest.mark.parametrize("size", [0, 31, 33, 63])
def test_row_of_wrong_size_rejected(size: int) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        blom.row_from_bytes(bytes(size))


def test_the_file_follows_its_documented_format_by_hand() -> None:
    """docs/protocol.md 8.2, recomputed with int arithmetic, hashlib and hmac only."""
    doc = json.loads(VECTORS_PATH.read_text())
    assert set(doc) == {"field_prime", "k", "master_upper_triangle_hex", "parties", "pairs"}
    p = int(doc["field_prime"], 16)
    assert doc["field_prime"].startswith("0x") and p == 2**255 - 19
    k = doc["k"]
    upper = doc["master_upper_triangle_hex"]
    hexes = [*itertools.chain.from_iterable(upper),
             *itertools.chain.from_iterable([q["x_hex"], *q["row_hex"]] for q in doc["parties"]),
             *itertools.chain.from_iterable([q["shared_element_hex"], q["pair_key_hex"]]
                                            for q in doc["pairs"])]
    assert all(len(v) == 64 and v == v.lower() and int(v, 16) >= 0 for v in hexes)
    # line i holds D[i][i], D[i][i+1], ..., D[i][k-1]; D is symmetric
    assert [len(line) for line in upper] == list(range(k, 0, -1))
    d = [[0] * k for _ in range(k)]
    for i, line in enumerate(upper):
        for j in range(i, k):
            d[i][j] = d[j][i] = int(line[j - i], 16)
    for party in doc["parties"]:
        ident = party["id"].encode()
        xv = int.from_bytes(hashlib.sha256(b"EP0791901/blom/v1/id\x00" + ident).digest(),
                            "big") % p
        assert party["x_hex"] == f"{xv:064x}"
        # row element j = sum_i D[j][i] x^i: the coefficients of the polynomial in y
        assert party["row_hex"] == [f"{sum(d[j][i] * pow(xv, i, p) for i in range(k)) % p:064x}"
                                    for j in range(k)]
    rows = {q["id"]: [int(v, 16) for v in q["row_hex"]] for q in doc["parties"]}
    xs = {q["id"]: int(q["x_hex"], 16) for q in doc["parties"]}
    for pair in doc["pairs"]:
        a, b = pair["a"], pair["b"]
        assert a.encode() < b.encode()  # the pair is listed in bytewise order
        e = sum(r * pow(xs[b], j, p) for j, r in enumerate(rows[a])) % p
        assert pair["shared_element_hex"] == f"{e:064x}"
        info = (b"pair" + bytes((len(a.encode()),)) + a.encode()
                + bytes((len(b.encode()),)) + b.encode())
        prk = hmac.new(b"EP0791901/blom/v1/pair", e.to_bytes(32, "big"), hashlib.sha256).digest()
        okm = hmac.new(prk, info + b"\x01", hashlib.sha256).digest()
        assert pair["pair_key_hex"] == okm.hex()
