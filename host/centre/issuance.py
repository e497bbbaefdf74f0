"""Rows from the packed master: R = V D mod p for a batch, in floating-point BLAS products.

V holds the batch's Vandermonde rows [x^0 .. x^(k-1)] mod p; D = U + U^T - diag(U) for the
upper triangle U that the master file packs. R is computed exactly over the integers by the
Chinese remainder theorem, then reduced mod p:

- Every element below p is < 2^255, so every entry of V D is below k p^2 < 2^522 (k <= 4096).
  PRIMES, 25 primes just below 2^21, multiply to M > 2^524: R is known once it is known mod
  each prime.
- Mod a prime q below 2^21, an element is a balanced residue, |r| <= q/2 + 8 < 2^20 + 8, so a
  product of two is below 2^40.0001 and an entry of V D, k <= 4096 such products, below
  2^52.0001: float64 holds every partial sum of a dot product exactly, in any order, so a
  float64 GEMM (numpy's OpenBLAS) is an exact integer product. That is the floor's work
  (64 x k x k multiply-adds, 255-bit) done as 25 products of 21-bit numbers at the machine's
  float speed.
- Residues come straight from the file's bytes, with no Python integer per element: an element
  is 16 big-endian 16-bit limbs, and r = sum_j limb_j (2^(16 (15 - j)) mod q) is one small
  GEMM (each term < 2^37, the sum < 2^41, exact) for every prime at once.
- D is read in square blocks b x b of the triangle, each gathered from the file's bytes once:
  one above the diagonal serves both halves of the symmetric product, R[c] += V[a] D[a][c]
  and R[a] += V[c] D[a][c]^T; one on the diagonal is gathered whole (D[i][j] from U[min][max])
  for one product. So the products add up to exactly V D, and memory stays at the master's
  bytes plus one block's limbs and residues (block_size) and the batch's V and R mod each
  prime.
- At the end, R mod p = sum_i y_i (M/q_i mod p) - t (M mod p) (y_i the CRT digits, t the
  whole part of sum_i y_i / q_i, exact because R < M/4): one more small GEMM in 16-bit limbs,
  a carry propagation and two folds by 2^255 = 19 (mod p), all vectorised, giving each element
  as its 32 big-endian bytes: the row files are hex of those bytes, with no Python integer per
  element either.

Exactness holds for any k <= 4096 (MAX_INNER below) and any BLAS whose DGEMM sums products
(OpenBLAS, which numpy's wheels ship, does; a Strassen-like DGEMM would not be exact here).
Tests compare every block shape, and masters at the bounds, with the reference evaluation
(card_applet.blom.row_for); bench/centre.py compares every run's row files, byte for byte, with
those of an independent flint program.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# One BLAS thread (unless the caller chose): the products are small enough that a second
# thread buys little wall time on a shared machine and costs CPU in spinning (one run at
# k = 2048 took 15 s instead of 1 s with two). Read by OpenBLAS when numpy loads it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from card_applet import blom
from host.centre.master import MAX_K, SIZE, Master, row_offsets

# the 25 largest primes below 2^21 (tests check that they are prime and that M > MAX_K p^2)
PRIMES = (2097143, 2097133, 2097131, 2097097, 2097091, 2097083, 2097047, 2097041, 2097031,
          2097023, 2097013, 2096993, 2096987, 2096971, 2096959, 2096957, 2096947, 2096923,
          2096911, 2096909, 2096893, 2096881, 2096873, 2096867, 2096851)
LIMBS = SIZE // 2  # 16-bit limbs an element
# the most terms an accumulated entry sums before it is reduced: an entry of V D is a dot
# product of length k, whichever blocks its terms come from
MAX_INNER = MAX_K
CHUNK = 4096  # elements turned into residues at a time
_Q = np.array(PRIMES, dtype=np.float64)[:, None]
_INV_Q = 1.0 / _Q


def block_size(k: int) -> int:
    """Elements a side of a block: larger blocks make the products faster, smaller ones keep
    memory near the master's size (a block costs about 240 b^2 bytes while it is turned into
    residues: 60 MB at b = 512)."""
    return max(256, min(512, k // 8))


def _limb_weights(values: Sequence[int]) -> np.ndarray:
    """(len(values) x 16): each value's 2^(16 (15 - j)) for limb j, mod each prime (rows)."""
    return np.array([[pow(2, 16 * (LIMBS - 1 - j), q) * v % q for j in range(LIMBS)]
                     for v, q in zip(values, PRIMES, strict=True)], dtype=np.float64)


_WEIGHTS = _limb_weights([1] * len(PRIMES))


def _reduce(x: np.ndarray) -> np.ndarray:
    """x (primes x n, exact integers < 2^53) to balanced residues, in place: x - q rint(x / q).
    x / q is off by at most 2^-18 from the exact quotient, so rint may miss by one only at
    .5, leaving |r| <= q/2 + 8."""
    t = x * _INV_Q
    np.rint(t, out=t)
    t *= _Q
    x -= t
    return x


def _residues(limbs: np.ndarray) -> np.ndarray:
    """Elements as (n x 16) big-endian 16-bit limbs -> (primes x n) balanced residues.
    CHUNK elements at a time, so each step's arrays stay in the CPU's cache (40 % faster)."""
    out = np.empty((len(PRIMES), len(limbs)))
    for start in range(0, len(limbs), CHUNK):
        part = out[:, start : start + CHUNK]
        np.matmul(_WEIGHTS, limbs[start : start + CHUNK].astype(np.float64).T, out=part)
        _reduce(part)
    return out


def _limb_view(packed: bytes) -> np.ndarray:
    return np.frombuffer(packed, dtype=">u2").reshape(-1, LIMBS)


def _block_limbs(limbs: np.ndarray, offsets: np.ndarray, r0: int, r1: int, c0: int,
                 c1: int) -> np.ndarray:
    """D[r0:r1][c0:c1]'s limbs, (b x w x 16): D[i][j] is stored as U[min][max]."""
    rows = np.arange(r0, r1)[:, None]
    cols = np.arange(c0, c1)[None, :]
    if c0 >= r1:  # above the diagonal: every element stored where it is
        return limbs[offsets[r0:r1, None] - rows + cols]
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    return limbs[offsets[low] - low + high]


def _crt_mod_p(acc: np.ndarray) -> bytes:
    """(primes x n) residues (|r| < 2^21) of integers 0 <= R < M/4 -> R mod p, 32 bytes each,
    big-endian, concatenated."""
    # y_i = R (M/q_i)^-1 mod q_i, in [0, 2 q_i): |y| < 2^41, so y / q is within 2^-32 of
    # y * (1 / q), and the floor of that less 2^-20 is floor(y / q) or one below it
    y = acc * _CRT_INVERSES
    t = y * _INV_Q
    t -= 2.0**-20
    np.floor(t, out=t)
    t *= _Q
    y -= t
    # t = floor(sum y_i / q_i) = floor(t + R / M), R / M in [0, 1/4): a quarter added keeps
    # the float sum's rounding (about 2^-48) off both integers
    whole = np.floor((y * _INV_Q).sum(axis=0) + 0.25)
    # R = sum y_i M/q_i - t M, mod p: one product with the factors' 16-bit limbs (each term
    # < 2^22 * 2^16, 26 terms: exact), limbs as rows, least significant first; the value is
    # below 26 * 2^22 * p < 2^282
    limbs = (_CRT_LIMBS @ np.vstack([y, whole[None, :]])).astype(np.int64)
    _carry(limbs)
    for _ in range(2):  # 2^255 = 19 (mod p): the value drops below 2^255 in two folds
        high = limbs[-1] >> 15
        limbs[-1] &= 0x7FFF
        limbs[0] += 19 * high
        _carry(limbs)
    # v >= p exactly when v + 19 >= 2^255: then v - p = v + 19 - 2^255
    plus = limbs.copy()
    plus[0] += 19
    _carry(plus)
    over = plus[-1] >> 15 != 0
    plus[-1] &= 0x7FFF
    limbs = np.where(over, plus, limbs)
    return limbs[::-1].T.astype(">u2").tobytes()


def _crt_constants() -> tuple[np.ndarray, np.ndarray]:
    p, m = blom.P, 1
    for q in PRIMES:
        m *= q
    inverses = np.array([[pow(m // q % q, -1, q)] for q in PRIMES], dtype=np.float64)
    # -M as p - (M mod p), so that every term is >= 0
    factors = [m // q % p for q in PRIMES] + [(p - m % p) % p]
    limbs = np.array([[(f >> (16 * j)) & 0xFFFF for f in factors] for j in range(LIMBS)],
                     dtype=np.float64)
    return inverses, limbs


_CRT_INVERSES, _CRT_LIMBS = _crt_constants()


def _carry(limbs: np.ndarray) -> None:
    """Normalise 16-bit limbs (int64 >= 0, one row a limb, least significant first) in place;
    the top one keeps the rest."""
    for j in range(LIMBS - 1):
        limbs[j + 1] += limbs[j] >> 16
        limbs[j] &= 0xFFFF


def packed_rows(master: Master, xs: Sequence[int], block: int | None = None) -> list[bytes]:
    """The rows for points xs: each k elements of 32 big-endian bytes."""
    k, n = master.k, len(PRIMES)
    if not xs:
        return []
    block = block or block_size(k)
    v = _residues(_limb_view(_vandermonde_bytes(xs, k))).reshape(n, len(xs), k)
    acc = np.zeros((n, len(xs), k))
    limbs = _limb_view(master.packed)
    offsets = np.array(row_offsets(k), dtype=np.int64)
    bounds = [(s, min(k, s + block)) for s in range(0, k, block)]
    for a, (r0, r1) in enumerate(bounds):
        for c0, c1 in bounds[a:]:
            u = _residues(_block_limbs(limbs, offsets, r0, r1, c0, c1).reshape(-1, LIMBS))
            u = u.reshape(n, r1 - r0, c1 - c0)
            acc[:, :, c0:c1] += v[:, :, r0:r1] @ u
            if r0 != c0:  # D's block below the diagonal is this one's transpose
                acc[:, :, r0:r1] += v[:, :, c0:c1] @ u.transpose(0, 2, 1)
            del u
    del v
    flat = _reduce(acc.reshape(n, -1))
    # CHUNK results at a time: the reconstruction's temporaries stay small
    data = b"".join([_crt_mod_p(flat[:, start : start + CHUNK])
                     for start in range(0, flat.shape[1], CHUNK)])
    width = k * SIZE
    return [data[r * width : (r + 1) * width] for r in range(len(xs))]


def _vandermonde_bytes(xs: Sequence[int], k: int) -> bytes:
    """The rows [x^0 .. x^(k-1)] mod p, each element's 32 big-endian bytes."""
    p = blom.P
    out = []
    for x in xs:
        power = 1
        for _ in range(k):
            out.append(power.to_bytes(SIZE, "big"))
            power = power * x % p
    return b"".join(out)


def rows_for(master: Master, xs: Sequence[int], block: int | None = None) -> list[list[int]]:
    return [blom.row_from_bytes(row) for row in packed_rows(master, xs, block)]
