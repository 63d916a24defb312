"""The vector index on a Milvus server: one collection per model id, derived from the gallery store.

Collection `faceid_<model>_<hash>`: primary key `face_id` (INT64, the store's face id, no auto id) and
`embedding` (FLOAT_VECTOR of the model card's dimension) under a FLAT index with metric IP: exact
inner-product search over the L2-normalised vectors, as FAISS's IndexFlatIP. Scores are turned into the
same float32 distances as the FAISS backend (vector_backend.distances_from_similarities), so the
matching rules see equal answers from both. Strong consistency: a search sees every earlier write.

Writes go through `upsert`: Milvus does not refuse a second row under a primary key that exists, and
upsert keeps one row per face id even when a rebuild and an enrolment race (several servers).

When the server cannot be reached, every call raises errors.Unavailable (UNAVAILABLE to callers);
the connection is dropped and made again, with the collection checked and loaded, on the next call.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np
from numpy.typing import ArrayLike, NDArray

from faceid.indexer import errors
from faceid.indexer.store.vectors import Checksum, id_checksum
from faceid.indexer.vector_backend import (
    EmbeddingSource,
    as_face_ids,
    as_unit_rows,
    distances_from_similarities,
)

log = logging.getLogger(__name__)

PK_FIELD = "face_id"
VECTOR_FIELD = "embedding"
# Milvus refuses a search limit above 16384 (its topk ceiling); deeper searches are answered this deep.
MAX_TOP_K = 16_384
_WRITE_BATCH = 5_000  # rows per upsert: 5000 × 128-d float32 ≈ 2.5 MB, far below the 64 MB gRPC limit
_ID_BATCH = 4_096  # ids per get/delete expression
_ITER_BATCH = 16_384  # ids per page when listing the collection (the most Milvus returns at once)
_FLUSH_AT = 1_000  # an add of this many rows or more is sealed into segments at once (see _reconcile)



def _quieten_pymilvus() -> None:
    """pymilvus logs every failed call at ERROR with a traceback (and each reconnection try at WARNING):
    while the server is away that is a page of log per request. This backend reports an outage itself
    (errors.Unavailable, one line per change in engine.py), so those two loggers only pass CRITICAL.
    Milvus Lite has no MVCC timestamp for iterators, which pymilvus warns about on every id listing.
    Called after importing pymilvus, whose logging set-up resets its child loggers' levels."""
    for name in ("pymilvus.decorators", "pymilvus.client.connection_manager"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)


def collection_name(model_id: str) -> str:
    """A valid Milvus collection name for a model id ([A-Za-z_][A-Za-z0-9_]*), distinct per model id."""
    slug = re.sub(r"[^0-9A-Za-z_]", "_", model_id)[:180]
    return f"faceid_{slug}_{hashlib.sha256(model_id.encode('utf-8')).hexdigest()[:8]}"


def describe_uri(uri: str) -> str:
    """host:port of a server URI, never its credentials; a local Milvus Lite file by its name."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https", "tcp", "grpc", "unix") and parts.hostname:
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    return uri.rsplit("/", 1)[-1]


class MilvusIndex:
    """One model's vectors in a Milvus collection (see the module docstring). Thread-safe.

    Searches run concurrently; add, remove and rebuild of this process are serialised by a lock.
    """

    def __init__(self, dim: int, model_id: str, *, uri: str, timeout_s: float = 10.0) -> None:
        if dim < 1:
            raise ValueError(f"embedding dimension must be ≥ 1, got {dim}")
        self.dim = dim
        self.model_id = model_id
        self.uri = uri
        self.timeout_s = timeout_s
        self.collection = collection_name(model_id)
        self._client: Any = None  # pymilvus.MilvusClient, made on first use (the server may be away now)
        self._connect_lock = threading.Lock()
        self._write_lock = threading.Lock()

    # ---------------------------------------------------------------- properties
    @property
    def kind(self) -> str:
        return "milvus"

    @property
    def backend(self) -> str:
        return "milvus-flat-ip"

    @property
    def device(self) -> str:
        return f"milvus:{describe_uri(self.uri)}"

    def __len__(self) -> int:
        with self._rpc("counting vectors") as client:
            rows = client.query(self.collection, filter="", output_fields=["count(*)"], timeout=self.timeout_s)
        return int(rows[0]["count(*)"])

    # ---------------------------------------------------------------- updates
    def add(self, ids: ArrayLike, vectors: ArrayLike) -> None:
        """Add vectors (n, d) float32, L2-normalised, under face ids (n,) int64 that are not held yet.

        Refuses (ValueError) what VectorIndex.add refuses: bad shapes or norms, negative, repeated or
        already held ids.
        """
        id_arr = as_face_ids(ids)
        x = as_unit_rows(vectors, self.dim, self.model_id, "vectors")
        if id_arr.shape[0] != x.shape[0]:
            raise ValueError(f"{id_arr.shape[0]} ids for {x.shape[0]} vectors")
        if id_arr.size == 0:
            return
        with self._write_lock, self._rpc("adding vectors") as client:
            present = self._present(client, id_arr)
            if present.size:
                raise ValueError(f"face ids already in the index: {present[:10].tolist()} (remove them first)")
            self._upsert(client, id_arr, x)
            if id_arr.size >= _FLUSH_AT:  # a bulk load, not an enrolment: see _reconcile
                client.flush(self.collection, timeout=self.timeout_s)

    def remove(self, ids: ArrayLike) -> int:
        """Remove face ids (n,) int64; ids not held are ignored. Returns how many were removed."""
        id_arr = np.unique(as_face_ids(ids, allow_repeats=True))
        if id_arr.size == 0:
            return 0
        with self._write_lock, self._rpc("removing vectors") as client:
            present = self._present(client, id_arr)
            if present.size:
                self._delete(client, present)
                # A delete hides the rows at once; their bytes leave the segment files at the next
                # compaction. Ask for it now: deletes are rare, and a hard delete should not linger on disk.
                client.compact(self.collection, timeout=self.timeout_s)
            return int(present.size)

    def rebuild_from(self, store: EmbeddingSource, batch: int = 100_000) -> int:
        """Write every one of the store's vectors again and delete the ids the store does not have.

        The collection is never dropped: searches (from this or another server) go on meanwhile and see
        the same faces, since face ids and their vectors do not change.
        """
        return self._reconcile(store, batch, rewrite=True)

    def sync_from(self, store: EmbeddingSource, batch: int = 100_000) -> int:
        """At start-up: Milvus keeps its rows across restarts, so only the difference is written
        (the store's faces it lacks are added, ids the store no longer has are deleted)."""
        return self._reconcile(store, batch, rewrite=False)

    def _reconcile(self, store: EmbeddingSource, batch: int, *, rewrite: bool) -> int:
        # Under the store's write lock: no commit of this process lands between the two snapshots.
        # The collection's ids are read before the store's, so an id another server inserted after
        # its own commit is in both snapshots and never taken for an extra one.
        with store.write_lock, self._write_lock, self._rpc("bringing the collection up to the gallery") as client:
            held = np.sort(self._all_ids(client))
            seen: list[NDArray[np.int64]] = []
            written = 0
            for ids, vectors in store.iter_embeddings(self.model_id, batch):
                id_arr = as_face_ids(ids)
                x = as_unit_rows(vectors, self.dim, self.model_id, f"stored embeddings of model {self.model_id!r}")
                todo = np.ones(id_arr.size, bool) if rewrite else ~np.isin(id_arr, held, assume_unique=True)
                self._upsert(client, id_arr[todo], x[todo])
                written += int(todo.sum())
                seen.append(id_arr)
            wanted = np.concatenate(seen) if seen else np.empty(0, np.int64)
            extra = np.setdiff1d(held, wanted, assume_unique=True)
            self._delete(client, extra)
            if written or extra.size:
                # Seal the bulk write into segments now: Milvus would do it later by itself, and until then
                # the rows sit in a growing buffer that every search scans row by row (Milvus Lite: seconds).
                client.flush(self.collection, timeout=self.timeout_s)
                log.info("Milvus collection %s: %d vectors written, %d deleted", self.collection, written, extra.size)
            return int(wanted.size)

    # ---------------------------------------------------------------- queries
    def search(self, queries: ArrayLike, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The k nearest faces of each query, as VectorIndex.search (distances ascending, -1/+inf padding)."""
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        q = as_unit_rows(queries, self.dim, self.model_id, "queries")
        limit = min(k, MAX_TOP_K)
        sims = np.full((q.shape[0], limit), -1.0, np.float32)
        ids = np.full((q.shape[0], limit), -1, np.int64)
        if q.shape[0]:
            with self._rpc("searching") as client:
                hits = client.search(
                    self.collection,
                    data=list(q),
                    limit=limit,
                    anns_field=VECTOR_FIELD,
                    search_params={"metric_type": "IP", "params": {}},
                    output_fields=[PK_FIELD],
                    consistency_level="Strong",
                    timeout=self.timeout_s,
                )
            for row, found in enumerate(hits):
                for col, hit in enumerate(found):
                    ids[row, col] = int(hit[PK_FIELD])
                    sims[row, col] = float(hit["distance"])  # the IP score: float32 on the server
        return distances_from_similarities(sims, ids, k)

    def ids(self) -> NDArray[np.int64]:
        """Every face id in the collection, (n,) int64 (unordered)."""
        with self._rpc("listing face ids") as client:
            return self._all_ids(client)

    def checksum(self) -> Checksum:
        """Count and checksum of the face ids held, by the same definition as GalleryStore.checksum."""
        return id_checksum(self.model_id, self.ids())

    def verify(self, store: EmbeddingSource) -> bool:
        """True when the collection holds exactly the store's faces of this model (count and checksum of ids)."""
        with store.write_lock:
            expected = store.checksum(self.model_id)
            try:
                return self.checksum() == expected
            except ValueError:  # a face id held twice: certainly not equal
                return False

    def ping(self) -> None:
        """Raise errors.Unavailable unless the server answers and our collection exists.

        A collection dropped behind our back counts as an outage: the next call creates it again (empty),
        and the engine's recovery (check + rebuild) fills it from the store.
        """
        with self._rpc("checking the server") as client:
            if not client.has_collection(self.collection, timeout=self.timeout_s):
                self._reset()
                raise errors.Unavailable(
                    f"the Milvus collection {self.collection} at {describe_uri(self.uri)} is gone; it is created "
                    "again and refilled from the gallery"
                )

    def close(self) -> None:
        with self._connect_lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a connection to a server that is gone: nothing left to release
                log.debug("closing the Milvus client failed", exc_info=True)

    # ---------------------------------------------------------------- connection
    @contextmanager
    def _rpc(self, what: str) -> Iterator[Any]:
        """The connected client; an unreachable server becomes errors.Unavailable (and a fresh connection later)."""
        try:
            yield self._connected()
        except errors.FaceIdError:
            raise
        except Exception as exc:
            if not _is_unreachable(exc):
                raise
            self._reset()
            raise errors.Unavailable(
                f"the vector index is unreachable (Milvus at {describe_uri(self.uri)}) while {what}: "
                f"{_reason(exc)}; retry shortly"
            ) from None

    def _connected(self) -> Any:
        with self._connect_lock:
            if self._client is None:
                from pymilvus import MilvusClient

                _quieten_pymilvus()
                client = MilvusClient(uri=self.uri, timeout=self.timeout_s)
                try:
                    self._ensure_collection(client)
                except BaseException:
                    client.close()
                    raise
                self._client = client
            return self._client

    def _reset(self) -> None:
        """Forget the connection: the next call connects again and re-checks (and loads) the collection."""
        self.close()

    def _ensure_collection(self, client: Any) -> None:
        from pymilvus import DataType, MilvusClient

        name = self.collection
        if client.has_collection(name, timeout=self.timeout_s):
            self._check_schema(client)
        else:
            schema = MilvusClient.create_schema(
                auto_id=False,
                enable_dynamic_field=False,
                description=f"faceid: face embeddings of model {self.model_id} (derived from the gallery store)",
            )
            schema.add_field(PK_FIELD, DataType.INT64, is_primary=True)
            schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
            index = client.prepare_index_params()
            index.add_index(VECTOR_FIELD, index_type="FLAT", metric_type="IP")
            try:
                client.create_collection(
                    name, schema=schema, index_params=index, consistency_level="Strong", timeout=self.timeout_s
                )
                log.info("created Milvus collection %s (%d-d, FLAT, IP) for model %s", name, self.dim, self.model_id)
            except Exception:
                if not client.has_collection(name, timeout=self.timeout_s):
                    raise
                self._check_schema(client)  # another server created it meanwhile
        client.load_collection(name, timeout=self.timeout_s)

    def _check_schema(self, client: Any) -> None:
        """An existing collection must have our fields, dimension and metric; else refuse, naming the fix."""
        from pymilvus import DataType

        desc = client.describe_collection(self.collection, timeout=self.timeout_s)
        fields = {f["name"]: f for f in desc.get("fields", [])}
        pk, vec = fields.get(PK_FIELD), fields.get(VECTOR_FIELD)
        problems = []
        if pk is None or pk.get("type") != DataType.INT64 or not pk.get("is_primary"):
            problems.append(f"no INT64 primary key {PK_FIELD!r}")
        if vec is None or vec.get("type") != DataType.FLOAT_VECTOR:
            problems.append(f"no FLOAT_VECTOR field {VECTOR_FIELD!r}")
        elif int(vec.get("params", {}).get("dim", -1)) != self.dim:
            problems.append(f"vectors of dimension {vec['params'].get('dim')}, not {self.dim}")
        else:
            metric = str(client.describe_index(self.collection, VECTOR_FIELD, timeout=self.timeout_s).get("metric_type"))
            if metric.upper() != "IP":
                problems.append(f"metric {metric}, not IP")
        if problems:
            raise errors.FailedPrecondition(
                f"the Milvus collection {self.collection} at {describe_uri(self.uri)} does not fit model "
                f"{self.model_id} ({'; '.join(problems)}); drop it (it is derived from the gallery and is "
                "rebuilt from it at the next start) or point --milvus-uri at another server"
            )

    # ---------------------------------------------------------------- helpers (called under _rpc)
    def _present(self, client: Any, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        found: list[int] = []
        for start in range(0, ids.size, _ID_BATCH):
            chunk = ids[start : start + _ID_BATCH].tolist()
            rows = client.get(self.collection, ids=chunk, output_fields=[PK_FIELD], timeout=self.timeout_s)
            found.extend(int(r[PK_FIELD]) for r in rows)
        return np.unique(np.asarray(found, dtype=np.int64))

    def _upsert(self, client: Any, ids: NDArray[np.int64], x: NDArray[np.float32]) -> None:
        for start in range(0, ids.size, _WRITE_BATCH):
            rows = [
                {PK_FIELD: int(i), VECTOR_FIELD: v}
                for i, v in zip(ids[start : start + _WRITE_BATCH].tolist(), x[start : start + _WRITE_BATCH], strict=True)
            ]
            client.upsert(self.collection, rows, timeout=self.timeout_s)

    def _delete(self, client: Any, ids: NDArray[np.int64]) -> None:
        for start in range(0, ids.size, _ID_BATCH):
            client.delete(self.collection, ids=ids[start : start + _ID_BATCH].tolist(), timeout=self.timeout_s)

    def _all_ids(self, client: Any) -> NDArray[np.int64]:
        it = client.query_iterator(
            self.collection, batch_size=_ITER_BATCH, filter=f"{PK_FIELD} >= 0", output_fields=[PK_FIELD],
            timeout=self.timeout_s,
        )
        parts: list[NDArray[np.int64]] = []
        try:
            while page := it.next():
                parts.append(np.fromiter((r[PK_FIELD] for r in page), dtype=np.int64, count=len(page)))
        finally:
            it.close()
        return np.concatenate(parts) if parts else np.empty(0, np.int64)


_UNREACHABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_CONNECT_FAILED = 2  # pymilvus.client.types.Status.CONNECT_FAILED


def _is_unreachable(exc: BaseException) -> bool:
    """A connection failure or timeout (retryable), as opposed to a refused request (a bug or misconfiguration)."""
    from pymilvus.exceptions import MilvusException, MilvusUnavailableException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MilvusUnavailableException):
            return True
        if isinstance(seen, grpc.RpcError) and getattr(seen, "code", None) and seen.code() in _UNREACHABLE_CODES:
            return True
        if isinstance(seen, MilvusException) and (seen.code == _CONNECT_FAILED or seen.code in _UNREACHABLE_CODES):
            return True
        seen = seen.__cause__
    return False


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message).strip().splitlines()[0][:200]
