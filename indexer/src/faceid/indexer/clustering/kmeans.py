"""Spherical K-means: good seeding (seeding.py) plus FAISS Lloyd iterations (backend.py).

Spherical means the centres are kept at unit length, like the embeddings, so "closest centre" is
"highest cosine" and the objective is the spherical inertia Σ‖xᵢ − c(xᵢ)‖² = Σ (2 − 2·cos).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from faceid.indexer.clustering.backend import FaissBackend, gpu_available
from faceid.indexer.clustering.seeding import kmeans_parallel, random_init
from faceid.indexer.errors import InvalidRequest

InitMethod = Literal["kmeans++", "random"]


@dataclass(frozen=True)
class KMeansResult:
    centroids: NDArray[np.float32]  # (k, d), unit rows
    assign: NDArray[np.int64]  # (n,), index of each point's closest centroid
    similarity: NDArray[np.float32]  # (n,), cosine between each point and its centroid
    inertia: float  # Σ squared L2 distance to the assigned unit centroid
    iterations: int
    seconds: float  # wall time, seeding included
    seed_seconds: float  # of which seeding
    device: str  # "cpu" or "cuda"

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def distance(self) -> NDArray[np.float32]:
        """(n,) L2 distance of each point to its centroid, in [0, 2]."""
        return np.sqrt(np.maximum(2.0 - 2.0 * self.similarity, 0.0)).astype(np.float32)

    def sizes(self) -> NDArray[np.int64]:
        """(k,) number of points in each cluster."""
        return np.bincount(self.assign, minlength=self.k)


def spherical_kmeans(
    x: NDArray[np.float32],
    k: int,
    *,
    seed: int = 0,
    niter: int = 20,
    init: InitMethod = "kmeans++",
    n_init: int = 1,
    use_gpu: bool | None = None,
) -> KMeansResult:
    """Cluster unit vectors x (n, d) float32 into k clusters.

    init: "kmeans++" = k-means‖ candidates + weighted greedy k-means++ (exact greedy k-means++ when n is
        small); "random" = k distinct points (FAISS's default, for comparison).
    n_init: runs with seeds seed, seed+1, …; the lowest inertia wins (useful for small galleries, where a
        run costs milliseconds and a local minimum is likelier).
    use_gpu: None = GPU when FAISS sees one.
    Deterministic for a given seed on a given machine. Raises InvalidRequest for bad arguments.
    """
    x = _validated(x, k, niter, n_init, init)
    backend = FaissBackend(use_gpu=gpu_available() if use_gpu is None else use_gpu)
    best: KMeansResult | None = None
    for run in range(n_init):
        result = _one_run(x, k, seed=seed + run, niter=niter, init=init, backend=backend)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


def assign_to_centroids(
    x: NDArray[np.float32], centroids: NDArray[np.float32], *, use_gpu: bool | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Closest unit centroid of each row of x (n, d): (assign (n,) int64, cosine (n,) float32)."""
    backend = FaissBackend(use_gpu=gpu_available() if use_gpu is None else use_gpu)
    sim, idx = backend.nearest(np.ascontiguousarray(x, dtype=np.float32), _unit(centroids))
    return idx, sim


def spherical_inertia(x: NDArray[np.float32], centroids: NDArray[np.float32]) -> float:
    """Σ over rows of x (n, d) of the squared distance to the closest centroid after scaling the
    centroids (k, d) to unit length: how any K-means result (sklearn's included) is scored here."""
    _, sim = assign_to_centroids(x, centroids, use_gpu=False)
    return float(np.maximum(2.0 - 2.0 * sim.astype(np.float64), 0.0).sum())


def _one_run(
    x: NDArray[np.float32], k: int, *, seed: int, niter: int, init: InitMethod, backend: FaissBackend
) -> KMeansResult:
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    if init == "random":
        seeds = random_init(x, k, rng)
    else:
        seeds = kmeans_parallel(x, k, rng, backend.nearest)
    seed_seconds = time.perf_counter() - start
    # FAISS's seed must fit in an int; it only picks which cluster to split when one empties.
    centroids = backend.lloyd(x, seeds, niter=niter, seed=seed % 2**31) if niter > 0 else seeds
    # FAISS's last assignment predates its last centroid update: assign once more to the final centres.
    sim, assign = backend.nearest(x, centroids)
    inertia = float(np.maximum(2.0 - 2.0 * sim.astype(np.float64), 0.0).sum())
    return KMeansResult(
        centroids=centroids,
        assign=assign.astype(np.int64),
        similarity=sim,
        inertia=inertia,
        iterations=niter,
        seconds=time.perf_counter() - start,
        seed_seconds=seed_seconds,
        device=backend.device,
    )


def _validated(x: NDArray[np.float32], k: int, niter: int, n_init: int, init: str) -> NDArray[np.float32]:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidRequest(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise InvalidRequest(f"k must be between 1 and the number of faces ({n}), got {k}")
    if niter < 0:
        raise InvalidRequest(f"niter must be >= 0, got {niter}")
    if n_init < 1:
        raise InvalidRequest(f"n_init must be >= 1, got {n_init}")
    if init not in ("kmeans++", "random"):
        raise InvalidRequest(f"init must be 'kmeans++' or 'random', got {init!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InvalidRequest("embeddings contain NaN or infinity")
    return _unit(x)


def _unit(a: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit length (a no-op up to rounding for embeddings, which arrive normalised)."""
    a = np.asarray(a, dtype=np.float32)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.ascontiguousarray(a / np.maximum(norms, 1e-12), dtype=np.float32)
