"""Seeded byte-level mutation for the reader fuzz tests (calibration files, products, replay):
one definition of what a damaged file looks like."""

from __future__ import annotations

import random


def mutate(blob: bytes, rng: random.Random, edits: int, insert_max: int, delete_max: int | None) -> bytes:
    """``blob`` after 1 to ``edits`` random edits: a byte overwritten, 1 to ``insert_max`` random
    bytes inserted, or 1 to ``delete_max`` bytes cut (``None``: cut to the end, a truncation)."""
    b = bytearray(blob)
    for _ in range(rng.randint(1, edits)):
        if not b:
            break
        pos, op = rng.randrange(len(b)), rng.randrange(3)
        if op == 0:
            b[pos] = rng.randrange(256)
        elif op == 1:
            b[pos:pos] = rng.randbytes(rng.randint(1, insert_max))
        else:
            del b[pos:None if delete_max is None else pos + rng.randint(1, delete_max)]
    return bytes(b)
