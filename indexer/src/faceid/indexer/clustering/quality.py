"""How good a clustering is (inertia, silhouette; purity, NMI, ARI against known labels) and the
automatic choice of K.

Silhouette (Rousseeuw 1987) of a point: (b − a) / max(a, b), a = mean distance to its own cluster, b =
mean distance to the nearest other cluster; the score is the mean over points, in [−1, 1]. It is
computed with the cosine distance (1 − cos), the natural one for embeddings, on at most
`sample_size` points drawn with the given seed (silhouette needs all pairwise distances: O(n²)).
It is defined for 2 ≤ K ≤ n − 1 only; otherwise it is reported as None.

Automatic K: run K-means for every K in the range and keep the K with the highest silhouette (ties: the
smaller K). Silhouette rewards clusters that are tight and apart, which is what identities are; unlike
inertia it does not keep improving as K grows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

from faceid.indexer.clustering.kmeans import KMeansResult, spherical_kmeans
from faceid.indexer.errors import InvalidRequest

SILHOUETTE_SAMPLE = 10_000  # 10k² cosine distances ≈ 0.4 GB of float32 work; beyond this, sample


@dataclass(frozen=True)
class ClusterMetrics:
    inertia: float  # Σ squared L2 distance to the unit centroid
    silhouette: float | None  # cosine silhouette; None when K < 2 or K = n
    purity: float | None = None  # known labels only: Σ_clusters max_label count / n
    nmi: float | None = None  # known labels only: normalized mutual information (arithmetic mean)
    ari: float | None = None  # known labels only: adjusted Rand index
    labeled_faces: int = 0  # how many faces had a label (purity/NMI/ARI are over these)


@dataclass(frozen=True)
class KChoice:
    k: int
    scores: dict[int, float]  # K -> silhouette
    results: dict[int, KMeansResult]  # K -> its clustering (the chosen one is reused by the caller)


def silhouette(
    x: NDArray[np.float32], assign: NDArray[np.int64], *, seed: int = 0, sample_size: int = SILHOUETTE_SAMPLE
) -> float | None:
    """Cosine silhouette of the clustering `assign` (n,) of x (n, d); None when undefined."""
    n = x.shape[0]
    k = np.unique(assign).size
    if k < 2 or k >= n:
        return None
    sample = min(n, sample_size)
    if sample < n:
        # A sample may miss a cluster entirely or keep one cluster only; silhouette needs ≥ 2 labels.
        idx = np.random.default_rng(seed).choice(n, size=sample, replace=False)
        if np.unique(assign[idx]).size < 2:
            return None
        return float(silhouette_score(x[idx], assign[idx], metric="cosine"))
    return float(silhouette_score(x, assign, metric="cosine"))


def cluster_metrics(
    x: NDArray[np.float32],
    result: KMeansResult,
    labels: Sequence[int | str | None] | None = None,
    *,
    seed: int = 0,
    sample_size: int = SILHOUETTE_SAMPLE,
) -> ClusterMetrics:
    """Inertia and silhouette always; purity, NMI and ARI over the faces whose label is known.

    labels: one per row of x (identity id or name), None for an unlabeled face; None = no labels at all.
    """
    sil = silhouette(x, result.assign, seed=seed, sample_size=sample_size)
    if labels is None:
        return ClusterMetrics(inertia=result.inertia, silhouette=sil)
    if len(labels) != x.shape[0]:
        raise InvalidRequest(f"{len(labels)} labels for {x.shape[0]} faces")
    known = np.array([label is not None for label in labels], dtype=bool)
    if not known.any():
        return ClusterMetrics(inertia=result.inertia, silhouette=sil)
    truth = _codes([label for label in labels if label is not None])
    pred = result.assign[known]
    return ClusterMetrics(
        inertia=result.inertia,
        silhouette=sil,
        purity=purity(truth, pred),
        nmi=float(normalized_mutual_info_score(truth, pred)),
        ari=float(adjusted_rand_score(truth, pred)),
        labeled_faces=int(known.sum()),
    )


def purity(truth: NDArray[np.int64], pred: NDArray[np.int64]) -> float:
    """Fraction of points whose cluster's majority label is their own label. (n,), (n,) -> [0, 1]."""
    table = np.zeros((int(pred.max()) + 1, int(truth.max()) + 1), dtype=np.int64)
    np.add.at(table, (pred, truth), 1)
    return float(table.max(axis=1).sum() / truth.size)


def choose_k(
    x: NDArray[np.float32],
    k_range: Sequence[int] | range,
    *,
    seed: int = 0,
    niter: int = 20,
    n_init: int = 1,
    sample_size: int = SILHOUETTE_SAMPLE,
    progress: Callable[[float], None] | None = None,
) -> KChoice:
    """The K of k_range with the highest cosine silhouette (see the module docstring).

    Every K is clustered with the same seed; `progress(fraction)` is called after each K.
    Raises InvalidRequest when the range is empty or holds a K outside 2..n−1.
    """
    n = x.shape[0]
    ks = sorted(set(int(k) for k in k_range))
    if not ks:
        raise InvalidRequest("the range of K to try is empty")
    if ks[0] < 2 or ks[-1] > n - 1:
        raise InvalidRequest(
            f"automatic K tries 2 <= K <= number of faces - 1 = {n - 1} (silhouette needs at least two "
            f"clusters and one cluster with two faces); got {ks[0]}..{ks[-1]}"
        )
    scores: dict[int, float] = {}
    results: dict[int, KMeansResult] = {}
    for i, k in enumerate(ks):
        result = spherical_kmeans(x, k, seed=seed, niter=niter, n_init=n_init)
        score = silhouette(x, result.assign, seed=seed, sample_size=sample_size)
        scores[k] = -1.0 if score is None else score
        results[k] = result
        if progress is not None:
            progress((i + 1) / len(ks))
    best = max(ks, key=lambda k: (scores[k], -k))
    return KChoice(k=best, scores=scores, results=results)


def _codes(labels: Sequence[int | str]) -> NDArray[np.int64]:
    """Labels of any hashable type -> dense int64 codes."""
    _, codes = np.unique(np.array([str(label) for label in labels]), return_inverse=True)
    return codes.astype(np.int64)
