"""A seeded random sample of a stream, nested across sizes: the sample of 500 is part of the
sample of 1000 for the same seed (source records and a live tenant's snapshot alike)."""

from __future__ import annotations

import hashlib
import heapq


def sample_key(seed: int, position: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=8).digest()


class NestedSample:
    """Seeded random sample of at most ``size`` items, holding only ``size`` in memory.

    Each item gets a key from (seed, position); the ``size`` smallest keys win, so the
    sample of 500 is part of the sample of 1000 for the same seed.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self._heap: list[tuple[bytes, int, dict]] = []  # max-heap via inverted keys

    def offer(self, position: int, value: dict) -> None:
        key = bytes(255 - b for b in sample_key(self.seed, position))  # invert for max-heap
        entry = (key, position, value)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif key > self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[dict]:
        """The sample in input order."""
        return [value for _, position, value in sorted(self._heap, key=lambda entry: entry[1])]
