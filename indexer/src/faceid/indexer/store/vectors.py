"""The vector contract shared by the gallery store and every vector index built from it.

- Embeddings are float32, L2-normalised, stored as little-endian bytes (`to_blob` / `from_blobs`).
- The consistency checksum of a model's vectors is defined here once, so that the store (SQL) and an
  index (FAISS today, Milvus later) compute exactly the same value from their own side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

# A unit vector stored as float32 has |norm - 1| ~ 1e-7; 1e-3 still catches any forgotten normalisation
# (a raw FaceNet embedding has a norm of ~10) without tripping on float32 round-off after arithmetic.
UNIT_NORM_TOLERANCE = 1e-3

# Bumped if the definition below ever changes, so that old and new checksums never compare equal.
_CHECKSUM_DOMAIN = b"faceid-face-ids-v1\x00"


@dataclass(frozen=True)
class Checksum:
    """`count` face ids of one model and the sha256 `digest` (hex) over them, in ascending order."""

    count: int
    digest: str

    def __iter__(self) -> Iterator[int | str]:
        # Unpacks as the (count, hex) pair: `count, digest = store.checksum(model)`.
        return iter((self.count, self.digest))


class IdChecksum:
    """Incremental checksum over the face ids of one model, fed in ascending order (streams any size).

    Definition: sha256(domain ‖ model_id utf-8 ‖ 0x00 ‖ ids as int64 little-endian, ascending).
    Since every id of a checksum belongs to the one model, this is the hash over sorted (face_id, model_id).
    """

    def __init__(self, model_id: str) -> None:
        self._hash = hashlib.sha256(_CHECKSUM_DOMAIN + model_id.encode("utf-8") + b"\x00")
        self._count = 0
        self._last: int | None = None

    def update(self, ids: ArrayLike) -> None:
        """Feed the next ids, (n,) int64, strictly ascending and above every id fed before."""
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if arr.size == 0:
            return
        if (arr.size > 1 and not bool(np.all(arr[1:] > arr[:-1]))) or (
            self._last is not None and int(arr[0]) <= self._last
        ):
            raise ValueError("checksum ids must be fed strictly ascending (sort them first; ids are unique)")
        self._hash.update(arr.astype("<i8", copy=False).tobytes())
        self._count += int(arr.size)
        self._last = int(arr[-1])

    def result(self) -> Checksum:
        return Checksum(self._count, self._hash.hexdigest())


def id_checksum(model_id: str, ids: ArrayLike) -> Checksum:
    """Checksum of a set of face ids of `model_id`, in any order; (n,) int64, unique."""
    arr = np.sort(np.asarray(ids, dtype=np.int64).reshape(-1))
    if arr.size > 1 and not bool(np.all(arr[1:] != arr[:-1])):
        # A duplicated id means two vectors under one face id: never equal to the store's checksum.
        dup = arr[1:][arr[1:] == arr[:-1]][:5].tolist()
        raise ValueError(f"duplicate face ids {dup}: an index holds each face once")
    acc = IdChecksum(model_id)
    acc.update(arr)
    return acc.result()


def unit_norm_violations(vectors: NDArray[np.float32]) -> NDArray[np.intp]:
    """Row positions of `vectors` (n, d) whose L2 norm is not 1 (within UNIT_NORM_TOLERANCE) or not finite."""
    # einsum avoids the (n, d) temporary of `vectors ** 2`; cheap next to any index operation.
    sq = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    bad = ~np.isfinite(sq) | (np.abs(np.sqrt(sq) - 1.0) > UNIT_NORM_TOLERANCE)
    return np.flatnonzero(bad)


def to_blob(vector: NDArray[np.float32]) -> bytes:
    """(d,) float32 → little-endian bytes, the stored form of an embedding."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blobs(blobs: Iterable[bytes | memoryview], dim: int) -> NDArray[np.float32]:
    """Stored embeddings → (n, dim) float32 (one copy; rows of another length are an error)."""
    parts = list(blobs)
    if any(len(part) != 4 * dim for part in parts):
        sizes = sorted({len(part) for part in parts})
        raise ValueError(f"stored embeddings are not all {dim}-d float32 (row sizes in bytes: {sizes[:5]})")
    joined = b"".join(parts)
    return np.frombuffer(joined, dtype="<f4").astype(np.float32, copy=False).reshape(-1, dim)
