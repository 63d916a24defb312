"""P×K batches: P identities, K images each, so every batch holds positives and negatives to mine from."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from faceid.indexer.errors import InvalidRequest


class PKBatchSampler:
    """Yields `n_batches` lists of indices: P identities drawn without replacement, K of each one's images.

    Only identities with at least 2 images are drawn (a lone image has no positive). An identity with fewer
    than K images contributes all of them (no duplicates: a duplicate gives a zero-distance "positive" that
    teaches nothing). `n_batches` defaults to one pass over the images: ceil(n_images / (P·K)).
    Usable as `batch_sampler=` of a torch DataLoader; deterministic for a given seed and epoch.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, n_batches: int | None = None, seed: int = 0) -> None:
        if p < 2 or k < 2:
            raise InvalidRequest(f"P×K batches need P >= 2 identities and K >= 2 images each, got P={p} K={k}")
        by_label: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(labels):
            by_label[int(label)].append(i)
        self.groups = {lab: idx for lab, idx in sorted(by_label.items()) if len(idx) >= 2}
        if len(self.groups) < 2:
            raise InvalidRequest(
                f"triplet training needs at least 2 people with 2+ images each; found {len(self.groups)}"
            )
        self.p = min(p, len(self.groups))
        self.k = k
        n_used = sum(len(v) for v in self.groups.values())
        self.n_batches = n_batches if n_batches is not None else max(1, math.ceil(n_used / (self.p * k)))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Different batches each epoch, reproducible from (seed, epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        labels = list(self.groups)
        for _ in range(self.n_batches):
            batch: list[int] = []
            for lab in rng.sample(labels, self.p):
                members = self.groups[lab]
                batch += rng.sample(members, min(self.k, len(members)))
            yield batch
