"""Matching rules: per-identity aggregation, the unknown policy and one identity per photo.

Pure functions over numpy arrays; no store, no index. Distances are L2 between unit vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from faceid.indexer.errors import InvalidRequest

MAX_DISTANCE = 2.0  # two unit vectors are at most 2 apart


def validate_threshold(threshold: float | None) -> None:
    """A request's threshold must be a finite number in (0, 2] (absent means the server default)."""
    if threshold is None:
        return
    if not math.isfinite(threshold) or not 0.0 < threshold <= MAX_DISTANCE:
        raise InvalidRequest(
            f"threshold {threshold!r} is outside (0, 2]: it is an L2 distance between unit-length "
            "embeddings; leave it unset to use the server's default"
        )


def validate_top_k(top_k: int, *, default: int, maximum: int) -> int:
    """0 means the default; negative or above the maximum is refused."""
    if top_k < 0 or top_k > maximum:
        raise InvalidRequest(f"top_k {top_k} is outside [0, {maximum}] (0 means the default, {default})")
    return top_k or default


def l2_distances(query: NDArray[np.float32], gallery: NDArray[np.float32]) -> NDArray[np.float32]:
    """Distances from one unit query (d,) to unit gallery rows (n, d) -> (n,)."""
    ip = gallery @ query
    return np.sqrt(np.clip(2.0 - 2.0 * ip, 0.0, None)).astype(np.float32)


@dataclass(frozen=True)
class IdentityHit:
    identity_id: int
    distance: float  # to the identity's closest face
    face_id: int


def aggregate_by_identity(
    distances: NDArray[np.float32], face_ids: NDArray[np.int64], face_identity: dict[int, int | None]
) -> list[IdentityHit]:
    """Collapse face hits of one query into identities (closest face wins), best first.

    distances, face_ids: (k,) search results for one query, -1 ids are padding. Faces without an identity
    (unlabeled) or no longer in the store (deleted meanwhile) are skipped.
    """
    best: dict[int, IdentityHit] = {}
    for dist, fid in zip(distances.tolist(), face_ids.tolist(), strict=True):
        if fid < 0:
            continue
        identity_id = face_identity.get(fid)
        if identity_id is None:
            continue
        hit = best.get(identity_id)
        if hit is None or dist < hit.distance:
            best[identity_id] = IdentityHit(identity_id, float(dist), int(fid))
    return sorted(best.values(), key=lambda h: (h.distance, h.identity_id))


def assign_identities(candidates: list[list[IdentityHit]], threshold: float) -> list[IdentityHit | None]:
    """Give each face of one photo at most one identity, and each identity to at most one face.

    Two independent argmins can name two faces of one photo the same person; instead solve the
    assignment (Hungarian algorithm) over the pairs within the threshold, minimising the total distance.
    A face whose only matches went to closer faces is unknown.
    """
    identity_ids = sorted({h.identity_id for hits in candidates for h in hits if h.distance <= threshold})
    if not identity_ids:
        return [None] * len(candidates)
    column = {iid: j for j, iid in enumerate(identity_ids)}
    # Pairs beyond the threshold are forbidden by a cost larger than any real total.
    forbidden = 1e6
    cost = np.full((len(candidates), len(identity_ids)), forbidden)
    hit_at: dict[tuple[int, int], IdentityHit] = {}
    for i, hits in enumerate(candidates):
        for h in hits:
            if h.distance <= threshold:
                cost[i, column[h.identity_id]] = h.distance
                hit_at[(i, column[h.identity_id])] = h
    rows, cols = linear_sum_assignment(cost)
    assigned: list[IdentityHit | None] = [None] * len(candidates)
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if cost[i, j] < forbidden:
            assigned[i] = hit_at[(i, j)]
    return assigned
