"""One clustering job, end to end: K-means (K given or chosen), metrics, outliers, 2-D view, names.

This is what the Cluster RPC's servicer calls once, with the embeddings the engine loaded from the store;
`progress(stage, fraction)` feeds the RPC's progress events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from faceid.indexer.clustering.kmeans import KMeansResult, spherical_kmeans
from faceid.indexer.clustering.naming import IdentitySearch, NearestIdentity, nearest_identities
from faceid.indexer.clustering.outliers import find_outliers
from faceid.indexer.clustering.projection import pca_2d
from faceid.indexer.clustering.quality import ClusterMetrics, choose_k, cluster_metrics
from faceid.indexer.errors import EmptyGallery, InvalidRequest

Progress = Callable[[str, float], None]  # (stage, fraction of that stage done in [0, 1])

# Stage names, in the order they are reported.
STAGE_CLUSTERING = "clustering"
STAGE_CHOOSING_K = "choosing_k"
STAGE_SCORING = "scoring"
STAGE_PROJECTING = "projecting"
STAGE_NAMING = "naming"

SMALL_GALLERY = 10_000  # up to this many faces a run costs little: keep the best of several seeds


@dataclass(frozen=True)
class ClusteringResult:
    kmeans: KMeansResult
    metrics: ClusterMetrics
    outliers: NDArray[np.bool_]  # (n,)
    projection: NDArray[np.float32]  # (n, 2)
    nearest: list[NearestIdentity]  # one per cluster; empty when no search was given
    seed: int
    k_scores: dict[int, float] = field(default_factory=dict)  # K -> silhouette, automatic K only

    @property
    def k(self) -> int:
        return self.kmeans.k


def cluster(
    x: NDArray[np.float32],
    *,
    k: int | None = None,
    k_range: Sequence[int] | range | None = None,
    labels: Sequence[int | str | None] | None = None,
    threshold: float | None = None,
    seed: int = 0,
    niter: int = 20,
    n_init: int | None = None,
    search: IdentitySearch | None = None,
    progress: Progress | None = None,
) -> ClusteringResult:
    """Cluster the unit embeddings x (n, d) into k clusters, or into the best K of k_range.

    labels: per face, its identity (id or name) or None; gives purity/NMI/ARI.
    threshold: the model's τ, for outliers and for `within_threshold` of the nearest identities.
    n_init: None = 5 restarts for galleries up to 10,000 faces, else 1.
    search: the gallery's identity search (see naming.py); None skips the nearest identities.
    """
    report: Progress = progress or (lambda stage, fraction: None)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise EmptyGallery("no faces to cluster: enrol photos first (or widen the scope)")
    if (k is None) == (k_range is None):
        raise InvalidRequest("give either k or a range of K to choose from, not both or neither")
    runs = n_init if n_init is not None else (5 if x.shape[0] <= SMALL_GALLERY else 1)

    scores: dict[int, float] = {}
    if k is not None:
        report(STAGE_CLUSTERING, 0.0)
        result = spherical_kmeans(x, k, seed=seed, niter=niter, n_init=runs)
        report(STAGE_CLUSTERING, 1.0)
    else:
        assert k_range is not None
        report(STAGE_CHOOSING_K, 0.0)
        choice = choose_k(
            x, k_range, seed=seed, niter=niter, n_init=runs, progress=lambda f: report(STAGE_CHOOSING_K, f)
        )
        result, scores = choice.results[choice.k], choice.scores

    report(STAGE_SCORING, 0.0)
    metrics = cluster_metrics(x, result, labels, seed=seed)
    outliers = find_outliers(result.distance, result.assign, threshold=threshold)
    report(STAGE_SCORING, 1.0)
    report(STAGE_PROJECTING, 0.0)
    projection = pca_2d(x)
    report(STAGE_PROJECTING, 1.0)
    nearest: list[NearestIdentity] = []
    if search is not None:
        report(STAGE_NAMING, 0.0)
        nearest = nearest_identities(result.centroids, search, threshold=threshold if threshold is not None else 2.0)
        report(STAGE_NAMING, 1.0)
    return ClusteringResult(
        kmeans=result,
        metrics=metrics,
        outliers=outliers,
        projection=projection,
        nearest=nearest,
        seed=seed,
        k_scores=scores,
    )
