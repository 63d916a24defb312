"""Clustering of the stored gallery, and naming what a run found.

`run_clustering` loads the active model's embeddings from the store (whole gallery, unlabeled faces only,
or a list of identities), clusters them with `clustering.cluster`, scores them against the identities
they are stored under and names each centroid's nearest enrolled identity through the vector index.

Runs are kept IN MEMORY on the engine (`ClusteringRuns`, the last 8), keyed by the run id returned in
the result, so that `name_cluster(run_id, cluster, name)` can name a cluster's faces later. They do not
survive a server restart: cluster again then. Naming and merging change only which identity a face
belongs to; the vectors (and so the index) stay as they are, and the store records each change in its
audit log.
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from faceid.indexer import errors
from faceid.indexer.clustering.pipeline import ClusteringResult, Progress, cluster
from faceid.indexer.store import GalleryStore
from faceid.indexer.vector_index import VectorIndex

KEPT_RUNS = 8  # clustering runs remembered for `name_cluster`
NEAREST_DEPTH = 64  # faces searched per centroid for its nearest labeled face


class Scope(enum.Enum):
    ALL = "all"
    UNLABELED = "unlabeled"
    IDENTITIES = "identities"


@dataclass(frozen=True)
class GalleryClustering:
    """One clustering run over stored faces."""

    run_id: str
    model_id: str
    face_ids: NDArray[np.int64]  # (n,) the clustered faces, ascending
    identity_ids: tuple[int | None, ...]  # (n,) what each face is stored under (None = unlabeled)
    result: ClusteringResult  # assignments, metrics, outliers, projection, nearest identities
    identity_names: dict[int, str] = field(default_factory=dict)  # id -> name of the identity_ids, at run time

    def faces_of(self, cluster_index: int, *, unlabeled_only: bool = False) -> list[int]:
        """The faces of one cluster; unlabeled_only keeps those that had no identity when the run was made."""
        if not 0 <= cluster_index < self.result.k:
            raise errors.InvalidRequest(
                f"run {self.run_id} has clusters 0..{self.result.k - 1}; there is no cluster {cluster_index}"
            )
        members = np.flatnonzero(self.result.kmeans.assign == cluster_index)
        if unlabeled_only:
            members = np.array([i for i in members if self.identity_ids[i] is None], dtype=np.int64)
            if members.size == 0:
                raise errors.InvalidRequest(
                    f"cluster {cluster_index} of run {self.run_id} has no unlabeled face: every face already has an identity"
                )
        return [int(f) for f in self.face_ids[members]]


class ClusteringRuns:
    """The last KEPT_RUNS runs, by run id (thread-safe; the oldest is forgotten first)."""

    def __init__(self, keep: int = KEPT_RUNS) -> None:
        self._keep = keep
        self._runs: OrderedDict[str, GalleryClustering] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, run: GalleryClustering) -> None:
        with self._lock:
            self._runs[run.run_id] = run
            while len(self._runs) > self._keep:
                self._runs.popitem(last=False)

    def run_ids(self) -> tuple[str, ...]:
        """The remembered runs' ids, oldest first."""
        with self._lock:
            return tuple(self._runs)

    def get(self, run_id: str | None) -> GalleryClustering:
        """A run by id; None or "" = the latest."""
        with self._lock:
            if not self._runs:
                raise errors.FailedPrecondition("no clustering run is remembered: cluster first (runs live in memory)")
            if not run_id:
                return next(reversed(self._runs.values()))
            if run_id not in self._runs:
                raise errors.NotFound(
                    f"no clustering run {run_id!r}: only the last {self._keep} runs are kept, in memory; cluster again"
                )
            return self._runs[run_id]


def _load(
    store: GalleryStore, model_id: str, scope: Scope, identities: Sequence[str]
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Face ids (n,) and unit vectors (n, d) of the scope, for one model."""
    identity_ids: list[int] | None = None
    if scope is Scope.IDENTITIES:
        if not identities:
            raise errors.InvalidRequest("scope 'identities' needs at least one identity name")
        identity_ids = [store.get_identity(name=name).id for name in identities]  # UnknownIdentity if missing
    elif identities:
        raise errors.InvalidRequest("identity names are only allowed with scope 'identities'")
    parts = list(store.iter_embeddings(model_id, identity_ids=identity_ids, unlabeled_only=scope is Scope.UNLABELED))
    if not parts:
        what = {Scope.ALL: "the gallery", Scope.UNLABELED: "unlabeled faces", Scope.IDENTITIES: "those identities"}
        raise errors.EmptyGallery(f"no faces to cluster in {what[scope]} for model {model_id}: enrol photos first")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.float32)


def _identity_search(store: GalleryStore, index: VectorIndex):  # noqa: ANN202 - see naming.IdentitySearch
    """Centroids (k, d) -> per centroid (name, id, distance) of its closest labeled face, or None."""

    def search(centroids: NDArray[np.float32]) -> list[tuple[str, int, float] | None]:
        if len(index) == 0:
            return [None] * centroids.shape[0]
        distances, ids = index.search(centroids, min(len(index), NEAREST_DEPTH))
        owners = store.face_identity_map({int(i) for i in ids.ravel() if i >= 0})
        names = store.identity_names({o for o in owners.values() if o is not None})
        out: list[tuple[str, int, float] | None] = []
        for row_d, row_i in zip(distances, ids):
            hit = next(((int(i), float(d)) for i, d in zip(row_i, row_d) if i >= 0 and owners.get(int(i))), None)
            if hit is None:
                out.append(None)
            else:
                owner = owners[hit[0]]
                assert owner is not None
                out.append((names.get(owner, str(owner)), owner, hit[1]))
        return out

    return search


def run_clustering(
    store: GalleryStore,
    index: VectorIndex,
    model_id: str,
    *,
    scope: Scope = Scope.ALL,
    identities: Sequence[str] = (),
    k: int | None = None,
    k_range: Sequence[int] | range | None = None,
    seed: int = 0,
    niter: int = 20,
    threshold: float | None = None,
    progress: Progress | None = None,
) -> GalleryClustering:
    """Cluster the stored faces of `scope` for `model_id` (see the module docstring)."""
    face_ids, x = _load(store, model_id, scope, identities)
    n = len(face_ids)
    if k is not None and not 1 <= k <= n:
        raise errors.InvalidRequest(f"k must be between 1 and the number of faces in scope ({n}); got {k}")
    if k_range is not None:
        ks = list(k_range)
        if not ks or min(ks) < 2 or max(ks) > n:
            raise errors.InvalidRequest(f"the range of K must lie within 2..{n} (faces in scope); got {ks[:1]}..{ks[-1:]}")
    if niter < 1:
        raise errors.InvalidRequest(f"niter must be ≥ 1; got {niter}")
    owners = store.face_identity_map(int(f) for f in face_ids)
    identity_ids = tuple(owners.get(int(f)) for f in face_ids)
    labels = identity_ids if any(i is not None for i in identity_ids) else None
    result = cluster(
        x,
        k=k,
        k_range=k_range,
        labels=labels,
        threshold=threshold,
        seed=seed,
        niter=niter,
        search=_identity_search(store, index),
        progress=progress,
    )
    names = store.identity_names({i for i in identity_ids if i is not None})
    return GalleryClustering(uuid.uuid4().hex[:12], model_id, face_ids, identity_ids, result, names)
