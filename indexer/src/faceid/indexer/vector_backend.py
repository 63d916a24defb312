"""What the engine needs from a vector index, whichever engine holds the vectors (FAISS or Milvus).

Every backend holds one model's L2-normalised float32 embeddings keyed by face id, answers exact
inner-product searches as L2 distances d = sqrt(2 - 2·ip) (float32, ascending, padded with id -1 and
+inf), and is derived from the gallery store: count + checksum of its face ids (store.vectors) compare
it with the store, and a rebuild makes it equal again. Matching rules (per-identity aggregation, the
unknown policy) stay in matching.py and see the same arrays from every backend.

`open_vector_backend` is the one place that chooses a backend; the engine only talks to the protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from faceid.indexer.store.vectors import Checksum, unit_norm_violations

if TYPE_CHECKING:
    from faceid.indexer.config import EngineConfig

BACKENDS = ("faiss", "milvus")


class EmbeddingSource(Protocol):
    """What an index is built from and checked against: the gallery store (faceid.indexer.store.GalleryStore)."""

    write_lock: AbstractContextManager[Any]

    def iter_embeddings(
        self, model_id: str, batch: int = ...
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]: ...

    def checksum(self, model_id: str) -> Checksum: ...


class VectorBackend(Protocol):
    """One model's vectors, keyed by face id. Implementations: VectorIndex (FAISS), MilvusIndex (Milvus).

    A backend that lives elsewhere (a server) raises faceid.indexer.errors.Unavailable from any call
    while it cannot be reached; `ping` asks it without doing anything else.
    """

    dim: int
    model_id: str

    @property
    def kind(self) -> str:
        """The backend's family, as configured: "faiss" or "milvus"."""

    @property
    def backend(self) -> str:
        """What exactly answers, e.g. "faiss-flat-ip" or "milvus-flat-ip"."""

    @property
    def device(self) -> str:
        """Where searches run ("cpu", "cuda:0", or the Milvus server's host:port)."""

    def __len__(self) -> int: ...

    def add(self, ids: ArrayLike, vectors: ArrayLike) -> None:
        """Add (n, d) unit vectors under face ids (n,) that are not held yet (ValueError otherwise)."""

    def remove(self, ids: ArrayLike) -> int:
        """Remove face ids (ids not held are ignored); returns how many were removed."""

    def search(self, queries: ArrayLike, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(q, k) distances ascending and face ids; rows padded with +inf / -1 beyond the gallery."""

    def ids(self) -> NDArray[np.int64]:
        """Every face id held."""

    def checksum(self) -> Checksum:
        """Count + checksum of the ids held (store.vectors.id_checksum)."""

    def verify(self, store: EmbeddingSource) -> bool:
        """True when the backend holds exactly the store's faces of this model."""

    def rebuild_from(self, store: EmbeddingSource, batch: int = ...) -> int:
        """Make the contents equal to the store's vectors (every vector written again); returns the count."""

    def sync_from(self, store: EmbeddingSource, batch: int = ...) -> int:
        """At start-up: bring the contents up to the store, cheaply where the backend persists them."""

    def ping(self) -> None:
        """Raise errors.Unavailable when the backend cannot be reached (in-process backends never do)."""

    def close(self) -> None: ...


def open_vector_backend(config: EngineConfig, dim: int, model_id: str) -> VectorBackend:
    """The configured backend for one model (nothing is loaded yet: call sync_from)."""
    if config.vector_backend == "faiss":
        from faceid.indexer.vector_index import VectorIndex

        return VectorIndex(dim, model_id)
    if config.vector_backend == "milvus":
        from faceid.indexer.milvus_index import MilvusIndex

        return MilvusIndex(dim, model_id, uri=config.milvus_uri, timeout_s=config.milvus_timeout_s)
    raise ValueError(f"vector backend must be one of {', '.join(BACKENDS)}, got {config.vector_backend!r}")


# ------------------------------------------------------------------------------ shared by the backends
def as_face_ids(ids: ArrayLike, *, allow_repeats: bool = False) -> NDArray[np.int64]:
    """(n,) int64 face ids, ≥ 0, unique unless `allow_repeats` (ValueError otherwise)."""
    arr = np.ascontiguousarray(ids, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"face ids must be a 1-d int64 array, got shape {arr.shape}")
    if arr.size and int(arr.min()) < 0:
        raise ValueError("face ids are ≥ 0 (-1 is the 'no result' marker)")
    if not allow_repeats and arr.size > 1 and np.unique(arr).size != arr.size:
        raise ValueError("face ids repeat within one add")
    return arr


def as_unit_rows(vectors: ArrayLike, dim: int, model_id: str, what: str) -> NDArray[np.float32]:
    """(n, dim) float32 rows of norm 1 (ValueError naming the first bad row otherwise)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must be (n, {dim}) float32 for model {model_id!r}, got {x.shape}")
    bad = unit_norm_violations(x)
    if bad.size:
        norm = float(np.linalg.norm(x[bad[0]]))
        raise ValueError(
            f"{what}: {bad.size} row(s) not L2-normalised (row {int(bad[0])} has norm {norm:.4f}); "
            "normalise at the embedding stage"
        )
    return x


def distances_from_similarities(
    sims: NDArray[np.float32], ids: NDArray[np.int64], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Inner products (q, kk) of unit vectors → L2 distances, padded to (q, k) with +inf / -1.

    One formula for every backend, in float32, so that equal inner products give equal distances.
    """
    sims = np.asarray(sims, dtype=np.float32)
    # Clip first: padding slots may carry ip = -3.4e38, and round-off can push ip a hair above 1.
    dist = np.sqrt(2.0 - 2.0 * np.clip(sims, -1.0, 1.0)).astype(np.float32, copy=False)
    ids = np.asarray(ids, dtype=np.int64)
    dist[ids < 0] = np.inf
    kk = dist.shape[1]
    if kk < k:
        dist = np.pad(dist, ((0, 0), (0, k - kk)), constant_values=np.inf)
        ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
    return dist, ids
