"""Rows from the packed master, as one matrix product R = V D per batch, block by block.

V holds the batch's Vandermonde rows [x^0 .. x^(k-1)]; D = U + U^T - diag(U) for the upper
triangle U the master file packs. Square blocks of U are turned into python-flint integer
matrices one at a time, and each serves both halves of the symmetric product:
R[c] += V[a] U[a][c] and R[a] += (U[a][c] V[c]^T)^T. A diagonal block (a = c) has its
diagonal cleared between the two products, so D's diagonal is counted once. So each element
of the file is converted once, memory stays at the master's bytes plus one block (never k^2
flint integers), and the multiplications add up to the same work as the one product V D.
Sums are kept over the integers and reduced mod p at the end.

Where the time goes (bench/centre.py): the products, and turning the file's bytes into flint
integers, about half a product's time. python-flint builds an fmpz_mat one Python object an
element (a 255-bit integer goes through its hexadecimal text), so the one conversion an
element is as cheap as it gets here: int.from_bytes on each 32-byte slice, then fmpz_mat.
Splitting elements into word-size limbs, or building flint polynomials first, costs more;
nmod_mat needs a word-size modulus and p is 255 bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import flint

from card_applet import blom
from host.centre.master import SIZE, Master, row_offsets


def block_size(k: int) -> int:
    """Elements a side of a block: larger blocks make flint's products and conversions
    faster, smaller ones keep memory near the master's size (a block of b^2 elements costs
    about 140 b^2 bytes while it is converted: 150 MB at b = 1024, for a 256 MB master)."""
    return max(256, min(1024, k // 4))


def vandermonde(xs: Sequence[int], k: int) -> list[list[int]]:
    p = blom.P
    out = []
    for x in xs:
        row, acc = [], 1
        for _ in range(k):
            row.append(acc)
            acc = acc * x % p
        out.append(row)
    return out


def _block(master: Master, offsets: list[int], r0: int, r1: int, c0: int, c1: int,
           ) -> flint.fmpz_mat:
    """U[r0:r1][c0:c1] as a flint matrix, zeros below the diagonal."""
    packed = master.packed
    element = int.from_bytes  # big-endian, the default: no keyword to parse per element
    entries: list[int] = []
    width = c1 - c0
    for i in range(r0, r1):
        first = max(c0, i)
        if first > c0:
            entries.extend((0,) * (first - c0))
        start = (offsets[i] + first - i) * SIZE
        entries += [element(packed[o : o + SIZE])
                    for o in range(start, start + (c1 - first) * SIZE, SIZE)]
    matrix = flint.fmpz_mat(r1 - r0, width, entries)
    del entries  # before the products: one block's integers at a time
    return matrix


def rows_for(master: Master, xs: Sequence[int], block: int | None = None) -> list[list[int]]:
    k, p = master.k, blom.P
    if not xs:
        return []
    block = block or block_size(k)
    powers = vandermonde(xs, k)
    bounds = [(s, min(k, s + block)) for s in range(0, k, block)]
    v = [flint.fmpz_mat(len(xs), e - s, [value for row in powers for value in row[s:e]])
         for s, e in bounds]
    del powers
    vt = [part.transpose() for part in v]
    acc: list[flint.fmpz_mat | None] = [None] * len(bounds)
    offsets = row_offsets(k)

    def add(target: int, product: flint.fmpz_mat) -> None:
        current = acc[target]
        acc[target] = product if current is None else current + product

    for a, (r0, r1) in enumerate(bounds):
        for c in range(a, len(bounds)):
            c0, c1 = bounds[c]
            u = _block(master, offsets, r0, r1, c0, c1)
            add(c, v[a] * u)
            if a == c:  # U^T's diagonal is U's: counted once already
                for i in range(r1 - r0):
                    u[i, i] = 0
            add(a, (u * vt[c]).transpose())
            del u
    out: list[list[int]] = [[] for _ in xs]
    for part in acc:
        assert part is not None
        width = part.ncols()
        entries = part.entries()
        for r in range(len(xs)):
            out[r] += [int(value) % p for value in entries[r * width : (r + 1) * width]]
    return out
