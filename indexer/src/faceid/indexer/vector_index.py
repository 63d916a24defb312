"""The FAISS index of one model's face embeddings: derived from the gallery store, never the truth.

Exact inner-product search over L2-normalised float32 vectors, ids = face ids, answered as L2 distances
(d = sqrt(2 - 2·cos)). One index per model id: vectors of two models are never comparable.

On CPU the index is a `faiss.IndexIDMap2(IndexFlatIP)`. With a GPU (`faiss.get_num_gpus() > 0`, faiss-gpu
installed) searches run on a `GpuIndexFlatIP` mirror of the same rows in the same order, while the CPU
index stays the master copy that ids, removals and checksums come from (GPU flat indexes cannot remove).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from faceid.indexer.store.vectors import Checksum, id_checksum
from faceid.indexer.vector_backend import (
    EmbeddingSource,
    as_face_ids,
    as_unit_rows,
    distances_from_similarities,
)

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss is a dependency of faceid-indexer
    raise ImportError(
        "the vector index needs FAISS: `uv sync` installs faiss-cpu; on an NVIDIA machine "
        "`uv sync --no-group faiss-cpu --group faiss-gpu`"
    ) from exc

# GPU brute-force k-selection is limited (2048 in current faiss); larger k is answered by the CPU master.
GPU_MAX_K = 2048
# Up to this many new ids are checked one by one against the index's id map (~10 µs each); more at once
# (a bulk load) are checked against a copy of the whole id list.
_PROBE_LIMIT = 4096

__all__ = ["GPU_MAX_K", "EmbeddingSource", "VectorIndex"]


class VectorIndex:
    """Exact search over one model's L2-normalised embeddings, keyed by face id. Thread-safe.

    Searches run concurrently on CPU (FAISS allows concurrent reads); add, remove and rebuild are exclusive.
    FAISS GPU indexes are not thread-safe even for search, so on a GPU every call is exclusive.
    """

    def __init__(self, dim: int, model_id: str, use_gpu: bool | None = None, gpu_device: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"embedding dimension must be ≥ 1, got {dim}")
        gpus = faiss.get_num_gpus()
        if use_gpu is None:
            use_gpu = gpus > 0
        elif use_gpu and gpus == 0:
            raise ValueError(
                "use_gpu=True but FAISS sees no GPU: install faiss-gpu "
                "(`uv sync --no-group faiss-cpu --group faiss-gpu`) on a machine with an NVIDIA GPU"
            )
        self.dim = dim
        self.model_id = model_id
        self.use_gpu = use_gpu
        self.gpu_device = gpu_device
        self._lock = _ReadWriteLock(exclusive_reads=use_gpu)
        self._gpu_resources: Any = faiss.StandardGpuResources() if use_gpu else None
        self._cpu = self._new_cpu_index()
        self._gpu: Any = None  # GPU mirror of self._cpu.index (same rows, same order)
        self._rows = _IdList()  # row → face id, for answers from the GPU mirror
        if use_gpu:
            self._gpu = self._to_gpu(self._cpu.index)

    # ---------------------------------------------------------------- properties
    @property
    def device(self) -> str:
        return f"cuda:{self.gpu_device}" if self.use_gpu else "cpu"

    @property
    def kind(self) -> str:
        return "faiss"

    @property
    def backend(self) -> str:
        return "faiss-gpu-flat-ip" if self.use_gpu else "faiss-flat-ip"

    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    # ---------------------------------------------------------------- updates
    def add(self, ids: ArrayLike, vectors: ArrayLike) -> None:
        """Add vectors (n, d) float32, L2-normalised, under face ids (n,) int64 that are not in the index yet.

        Refuses (ValueError) unnormalised or non-finite rows, wrong shapes, negative or repeated ids: the
        index must stay equal to the store, and a wrong vector would rank wrongly without an error.
        """
        id_arr = _as_ids(ids)
        x = self._as_rows(vectors, "vectors")
        if id_arr.shape[0] != x.shape[0]:
            raise ValueError(f"{id_arr.shape[0]} ids for {x.shape[0]} vectors")
        if id_arr.size == 0:
            return
        with self._lock.write():
            present = self._present(id_arr)
            if present:
                raise ValueError(f"face ids already in the index: {present[:10]} (remove them first)")
            self._cpu.add_with_ids(x, id_arr)
            if self._gpu is not None:
                self._gpu.add(x)
                self._rows.extend(id_arr)

    def remove(self, ids: ArrayLike) -> int:
        """Remove face ids (n,) int64; ids not in the index are ignored. Returns how many were removed."""
        id_arr = _as_ids(ids, allow_repeats=True)
        if id_arr.size == 0:
            return 0
        with self._lock.write():
            removed = int(self._cpu.remove_ids(id_arr))
            if removed and self._gpu is not None:
                # A GPU flat index cannot remove rows: upload the compacted master again (O(n), deletes are rare).
                self._gpu = self._to_gpu(self._cpu.index)
                self._rows = _IdList(faiss.vector_to_array(self._cpu.id_map))
            return removed

    def rebuild_from(self, store: EmbeddingSource, batch: int = 100_000) -> int:
        """Replace the contents with the store's vectors of this model; returns how many were loaded.

        Holds the store's write lock throughout, so no commit lands between the store's snapshot and the
        swap; searches go on against the old contents until the new ones are complete (2× memory meanwhile).
        """
        with store.write_lock:
            fresh = self._new_cpu_index()
            for ids, vectors in store.iter_embeddings(self.model_id, batch):
                x = self._as_rows(vectors, f"stored embeddings of model {self.model_id!r}")
                fresh.add_with_ids(x, _as_ids(ids))  # unique: they are the store's primary keys
            gpu = self._to_gpu(fresh.index) if self.use_gpu else None
            with self._lock.write():
                self._cpu, self._gpu = fresh, gpu
                self._rows = _IdList(faiss.vector_to_array(fresh.id_map) if gpu is not None else None)
            return int(fresh.ntotal)

    def sync_from(self, store: EmbeddingSource, batch: int = 100_000) -> int:
        """At start-up: an in-memory index starts empty, so this is a full load (rebuild_from)."""
        return self.rebuild_from(store, batch)

    def ping(self) -> None:
        """In-process: always reachable."""

    def close(self) -> None:
        """Nothing to release beyond memory (the GC frees the FAISS indexes)."""

    # ---------------------------------------------------------------- queries
    def search(self, queries: ArrayLike, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The k nearest faces of each query (q, d) float32, L2-normalised.

        Returns distances (q, k) float32, the L2 distance sqrt(max(0, 2 - 2·ip)), ascending, and face ids
        (q, k) int64; where fewer than k faces exist the row is padded with id -1 and distance +inf.
        """
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        q = self._as_rows(queries, "queries")
        with self._lock.read():
            kk = min(k, int(self._cpu.ntotal))
            if kk == 0 or q.shape[0] == 0:
                sims, ids = np.empty((q.shape[0], 0), np.float32), np.empty((q.shape[0], 0), np.int64)
            elif self._gpu is not None and kk <= GPU_MAX_K:
                sims, rows = self._gpu.search(q, kk)
                ids = self._rows.lookup(rows)
            else:
                sims, ids = self._cpu.search(q, kk)
        return distances_from_similarities(sims, ids, k)

    def ids(self) -> NDArray[np.int64]:
        """Every face id in the index, (n,) int64, in insertion order."""
        with self._lock.read():
            return faiss.vector_to_array(self._cpu.id_map).astype(np.int64, copy=False)

    def present(self, ids: ArrayLike) -> NDArray[np.int64]:
        """Those of the face ids (n,) int64 that the index holds (e.g. to apply a change log idempotently)."""
        id_arr = _as_ids(ids, allow_repeats=True)
        with self._lock.read():
            return np.array(self._present(id_arr), dtype=np.int64)

    def checksum(self) -> Checksum:
        """Count and checksum of the face ids held, by the same definition as GalleryStore.checksum."""
        return id_checksum(self.model_id, self.ids())

    def verify(self, store: EmbeddingSource) -> bool:
        """True when the index holds exactly the store's faces of this model (count and checksum of ids)."""
        with store.write_lock:  # no commit between the two checksums
            expected = store.checksum(self.model_id)
            try:
                return self.checksum() == expected
            except ValueError:  # a face id held twice: certainly not equal
                return False

    # ---------------------------------------------------------------- internals
    def _new_cpu_index(self) -> Any:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _to_gpu(self, flat: Any) -> Any:
        # fp32 on the GPU too: answers equal the CPU's (float16 would shift distances by ~1e-3).
        return faiss.index_cpu_to_gpu(self._gpu_resources, self.gpu_device, flat)

    def _as_rows(self, vectors: ArrayLike, what: str) -> NDArray[np.float32]:
        return as_unit_rows(vectors, self.dim, self.model_id, what)

    def _present(self, ids: NDArray[np.int64]) -> list[int]:
        if self._cpu.ntotal == 0:
            return []
        if ids.size > _PROBE_LIMIT:
            held = faiss.vector_to_array(self._cpu.id_map)
            return ids[np.isin(ids, held)].tolist()
        present = []
        for i in ids.tolist():
            try:
                self._cpu.reconstruct(i)  # IndexIDMap2 keeps an id → row hash map
            except RuntimeError:
                continue
            present.append(i)
        return present


_as_ids = as_face_ids


class _IdList:
    """A growable int64 array (amortised O(1) appends): row number → face id for the GPU mirror."""

    def __init__(self, initial: NDArray[np.int64] | None = None) -> None:
        data = np.empty(0, np.int64) if initial is None else np.asarray(initial, dtype=np.int64)
        self._buf = data.copy()
        self._n = data.size

    def extend(self, ids: NDArray[np.int64]) -> None:
        need = self._n + ids.size
        if need > self._buf.size:
            grown = np.empty(max(need, 2 * self._buf.size, 1024), np.int64)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : need] = ids
        self._n = need

    def lookup(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        """(q, k) row numbers (-1 = none) → face ids (-1 = none)."""
        return np.where(rows >= 0, self._buf[: self._n][np.maximum(rows, 0)], -1)


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers, so writers never starve."""

    def __init__(self, *, exclusive_reads: bool = False) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._exclusive_reads = exclusive_reads

    @contextmanager
    def read(self) -> Iterator[None]:
        if self._exclusive_reads:
            with self.write():
                yield
            return
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
