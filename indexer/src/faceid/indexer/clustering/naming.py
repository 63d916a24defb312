"""Each cluster's nearest enrolled identity: a naming suggestion for the report and `faceid name`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# The engine's gallery search: unit queries (k, d) -> for each query, (identity name, identity id,
# L2 distance) of its closest labeled face, or None when nothing labeled exists for the model.
IdentitySearch = Callable[[NDArray[np.float32]], Sequence[tuple[str, int, float] | None]]


@dataclass(frozen=True)
class NearestIdentity:
    cluster: int
    identity: str | None  # None: no labeled face to compare with
    identity_id: int | None
    distance: float | None  # L2 from the (unit) centroid to that identity's closest face
    within_threshold: bool  # distance <= τ: the model would call the centroid that person


def nearest_identities(
    centroids: NDArray[np.float32], search: IdentitySearch, *, threshold: float
) -> list[NearestIdentity]:
    """One NearestIdentity per centroid (k, d); centroids are scaled to unit length before the search."""
    c = np.asarray(centroids, dtype=np.float32)
    c = np.ascontiguousarray(c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12))
    hits = search(c)
    if len(hits) != c.shape[0]:
        raise ValueError(f"the identity search answered {len(hits)} rows for {c.shape[0]} centroids")
    out = []
    for cluster, hit in enumerate(hits):
        if hit is None:
            out.append(NearestIdentity(cluster, None, None, None, False))
        else:
            name, identity_id, distance = hit
            out.append(NearestIdentity(cluster, name, identity_id, float(distance), float(distance) <= threshold))
    return out
