"""Row issuance in float64 products mod small primes: the bounds that make it exact, and the
rows at the extremes of those bounds against the reference evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from card_applet import blom
from host.centre import issuance
from host.centre.authority import row_file_bytes, write_row_files
from host.centre.master import MAX_K, Master

FLOAT_EXACT = 2**53  # every integer below it is a float64, so sums below it are exact


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def test_the_primes_determine_every_entry_of_v_times_d() -> None:
    assert len(set(issuance.PRIMES)) == len(issuance.PRIMES)
    assert all(is_prime(q) and q < 2**21 for q in issuance.PRIMES)
    modulus = 1
    for q in issuance.PRIMES:
        modulus *= q
    # an entry of V D sums k products of elements below p; the reconstruction needs R < M / 4
    assert modulus > MAX_K * (blom.P - 1) ** 2 * 4


def test_every_float_sum_stays_exact() -> None:
    residue = 2**20 + 8  # a balanced residue after _reduce, its rounding included
    # the accumulated products: an entry of V D, k terms, before acc is reduced; and q times
    # the rounded quotient, within q of that sum, below 2^53 too
    assert issuance.MAX_INNER >= MAX_K
    assert issuance.MAX_INNER * residue**2 + 2**21 < FLOAT_EXACT
    # an element's residue from its 16 limbs, before reduction
    assert issuance.LIMBS * (2**16 - 1) * (2**21 - 1) < FLOAT_EXACT
    # the reconstruction: 26 digits below 2^22 times 16-bit limbs of the factors
    assert (len(issuance.PRIMES) + 1) * 2**22 * (2**16 - 1) < FLOAT_EXACT


def reference(master: Master, xs: list[int]) -> list[list[int]]:
    matrix = master.matrix()
    return [blom.row_for(matrix, x) for x in xs]


# 1 and p - 1 make V all ones and all p - 1 or 1: with a master of p - 1 everywhere, the
# entries of V D are as large as they get; a zero master makes them all 0 (R = 0 exactly,
# where a float sum that rounds below an integer would show)
EXTREME_XS = [1, blom.P - 1, 2, blom.P - 2]


@pytest.mark.parametrize("fill", [0, 1, blom.P - 1])
@pytest.mark.parametrize(("k", "block"), [(1, None), (3, 1), (40, 16), (70, None)])
def test_extreme_masters_give_the_reference_rows(fill: int, k: int, block: int | None) -> None:
    master = Master(k, blom.element_to_bytes(fill) * (k * (k + 1) // 2))
    assert issuance.rows_for(master, EXTREME_XS, block) == reference(master, EXTREME_XS)


def test_a_large_centre_spans_several_blocks_exactly() -> None:
    # k above the default block: several diagonal and off-diagonal blocks, at the real block
    # size, with the largest elements in the master
    k = issuance.block_size(600) + 88
    master = Master(k, blom.element_to_bytes(blom.P - 1) * (k * (k + 1) // 2))
    assert issuance.rows_for(master, EXTREME_XS[:2]) == reference(master, EXTREME_XS[:2])


def test_packed_rows_make_the_same_row_files(tmp_path: Path) -> None:
    row = [0, 1, blom.P - 1, 2**254 + 12345]
    packed = b"".join(blom.element_to_bytes(v) for v in row)
    assert row_file_bytes("holder:a@b.example", packed) == row_file_bytes(
        "holder:a@b.example", row)
    write_row_files([(tmp_path / "a.row.json", "holder:a@b.example", packed)])
    doc = {"format": 1, "id": "holder:a@b.example", "k": 4,
           "row_hex": [f"{v:064x}" for v in row]}
    assert (tmp_path / "a.row.json").read_bytes() == json.dumps(doc, indent=1).encode()
