"""The floor of `nettx authority issue` as a whole process: the least a Python program does
to issue rows from the master file with python-flint, and nothing else.

    python bench/centre_floor.py MASTER_BIN OUT_DIR IDENTIFIER...

It imports only flint and the standard library, reads the master file (its header for k, then
the packed upper triangle; no checksum, no range check, no registry), computes the rows with
python-flint (R = V D, each element of the file turned into a flint integer once, square
blocks of the triangle serving both halves of the symmetric product: how the command computed
them before it moved to exact float64 products mod small primes), and writes one row file an
identifier, byte for byte what the command writes, each fsynced, renamed into place, the
directory fsynced once. bench/centre.py times it exactly as it times the command (same
wrapper, same peak RSS) and checks that the two wrote the same bytes: an independent check of
the command's arithmetic on every run.
"""

import hashlib
import json
import os
import struct
import sys
import tempfile

import flint

P = 2**255 - 19
SIZE = 32
HEADER = struct.Struct(">8sHHI32s")  # magic, version, k, element count, SHA-256 of the body


def x_of(identifier: str) -> int:
    digest = hashlib.sha256(b"EP0791901/blom/v1/id\x00" + identifier.encode()).digest()
    return int.from_bytes(digest, "big") % P


def rows(body: bytes, k: int, xs: list[int]) -> list[list[int]]:
    powers = []
    for x in xs:
        row, acc = [], 1
        for _ in range(k):
            row.append(acc)
            acc = acc * x % P
        powers.append(row)
    block = max(256, min(1024, k // 4))  # as the command: memory near the master's size
    bounds = [(s, min(k, s + block)) for s in range(0, k, block)]
    v = [flint.fmpz_mat(len(xs), e - s, [c for row in powers for c in row[s:e]])
         for s, e in bounds]
    vt = [m.transpose() for m in v]
    acc: list = [None] * len(bounds)
    element = int.from_bytes
    for a, (r0, r1) in enumerate(bounds):
        for c in range(a, len(bounds)):
            c0, c1 = bounds[c]
            entries: list[int] = []
            for i in range(r0, r1):  # U[i][c0:c1], zeros left of the diagonal
                first = max(c0, i)
                entries += [0] * (first - c0)
                start = (i * k - i * (i - 1) // 2 + first - i) * SIZE
                entries += [element(body[o : o + SIZE])
                            for o in range(start, start + (c1 - first) * SIZE, SIZE)]
            u = flint.fmpz_mat(r1 - r0, c1 - c0, entries)
            del entries
            products = [(c, v[a] * u)]
            if a == c:
                for i in range(r1 - r0):
                    u[i, i] = 0
            products.append((a, (u * vt[c]).transpose()))
            for target, product in products:
                acc[target] = product if acc[target] is None else acc[target] + product
            del u, products  # before the next block is built: one block at a time
    out: list[list[int]] = [[] for _ in xs]
    for part in acc:
        width, entries = part.ncols(), part.entries()
        for r in range(len(xs)):
            out[r] += [int(e) % P for e in entries[r * width : (r + 1) * width]]
    return out


def main() -> None:
    master, out_dir, identifiers = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(master, "rb", buffering=0) as f:
        k, count = HEADER.unpack(f.read(HEADER.size))[2:4]
        body = f.read(count * SIZE)
    issued = rows(body, k, [x_of(i) for i in identifiers])
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    staged = []
    for identifier, row in zip(identifiers, issued, strict=True):
        # json.dumps(doc, indent=1), written out: json's indented encoder is pure Python
        hexed = '",\n  "'.join([f"{v:064x}" for v in row])
        text = (f'{{\n "format": 1,\n "id": {json.dumps(identifier)},\n "k": {k},\n'
                f' "row_hex": [\n  "{hexed}"\n ]\n}}')
        name = f"{identifier.replace('/', '_').replace(':', '_')}.row.json"
        fd, tmp = tempfile.mkstemp(dir=out_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        staged.append((tmp, os.path.join(out_dir, name)))
    for tmp, path in staged:
        os.replace(tmp, path)
    directory = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(directory)
    os.close(directory)


if __name__ == "__main__":
    main()
