"""Synthetic clustered embeddings on the unit sphere, for benchmarks and tests of the clustering code.

Face embeddings of one person sit in a cap around that person's mean direction, and galleries hold a
few people with many photos and many with few. `spherical_blobs` imitates both: centres drawn uniformly
on the sphere, points = normalise(centre + σ·N(0, I)) (for large d this is close to a von Mises–Fisher
distribution with mean direction `centre`), a per-cluster σ, and log-normal cluster sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Blobs:
    x: NDArray[np.float32]  # (n, d), unit rows
    labels: NDArray[np.int64]  # (n,), the true cluster of each row
    centres: NDArray[np.float32]  # (k, d), unit rows


def spherical_blobs(
    n: int,
    d: int,
    k: int,
    *,
    seed: int = 0,
    spread: float = 0.45,
    spread_jitter: float = 0.3,
    size_sigma: float = 0.5,
) -> Blobs:
    """Draw n unit vectors in k clusters.

    spread: typical angle (radians) between a point and its centre; 0.45 puts the median distance between
        two faces of one cluster near 0.6 and a point-to-centre distance near 0.45, like FaceNet embeddings
        of one person (data/faces: median same-person distance 0.54).
    spread_jitter: each cluster's spread is multiplied by a factor drawn uniformly in [1 - j, 1 + j].
    size_sigma: cluster sizes are proportional to lognormal(0, size_sigma) draws (every cluster gets ≥ 1).
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    weights = rng.lognormal(0.0, size_sigma, k)
    sizes = 1 + np.floor(weights / weights.sum() * (n - k)).astype(np.int64)
    sizes[: n - int(sizes.sum())] += 1  # hand out the rounding remainder
    labels = np.repeat(np.arange(k, dtype=np.int64), sizes)
    rng.shuffle(labels)

    # |noise| ≈ σ·√d, so the angle to the centre is ≈ atan(σ·√d): pick σ to hit the wanted spread.
    sigma = np.tan(spread) / np.sqrt(d) * rng.uniform(1 - spread_jitter, 1 + spread_jitter, k)
    x = centres[labels] + (rng.standard_normal((n, d)) * sigma[labels, None]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return Blobs(x=np.ascontiguousarray(x, dtype=np.float32), labels=labels, centres=centres)
