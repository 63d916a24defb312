"""Matching rules: aggregation per identity, unknown policy, one identity per photo, request bounds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceid.indexer.errors import InvalidRequest
from faceid.indexer.matching import (
    IdentityHit,
    aggregate_by_identity,
    assign_identities,
    l2_distances,
    validate_threshold,
    validate_top_k,
)


def test_aggregate_keeps_each_identitys_closest_face_and_skips_unlabeled_and_padding() -> None:
    distances = np.array([0.3, 0.5, 0.6, 0.7, 0.9], np.float32)
    ids = np.array([10, 11, 12, 13, -1], np.int64)
    face_identity = {10: 1, 11: None, 12: 1, 13: 2}
    hits = aggregate_by_identity(distances, ids, face_identity)
    assert [(h.identity_id, h.face_id) for h in hits] == [(1, 10), (2, 13)]
    assert hits[0].distance == pytest.approx(0.3)


def test_two_faces_never_get_the_same_identity() -> None:
    # Both faces are closest to identity 1; the second face is closer to it, so the first gets identity 2.
    hits = [
        [IdentityHit(1, 0.50, 100), IdentityHit(2, 0.60, 200)],
        [IdentityHit(1, 0.40, 101), IdentityHit(3, 1.50, 300)],
    ]
    assigned = assign_identities(hits, threshold=1.0)
    assert assigned[0] is not None and assigned[0].identity_id == 2
    assert assigned[1] is not None and assigned[1].identity_id == 1


def test_face_whose_only_match_went_elsewhere_is_unknown() -> None:
    hits = [[IdentityHit(1, 0.5, 100)], [IdentityHit(1, 0.3, 101)], [IdentityHit(4, 1.3, 400)]]
    assigned = assign_identities(hits, threshold=1.0)
    assert assigned[1] is not None and assigned[1].identity_id == 1
    assert assigned[0] is None  # lost identity 1 to a closer face
    assert assigned[2] is None  # beyond the threshold: a stranger keeps no name


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(1, 5), st.floats(0, 2)), max_size=5), min_size=1, max_size=4),
       st.floats(0.1, 2.0))
def test_assignment_is_optimal_and_within_threshold(raw: list, threshold: float) -> None:
    hits = []
    for face in raw:
        best: dict[int, float] = {}
        for iid, d in face:
            best[iid] = min(d, best.get(iid, math.inf))
        hits.append([IdentityHit(i, d, i * 10) for i, d in sorted(best.items(), key=lambda x: x[1])])
    assigned = assign_identities(hits, threshold)
    names = [a.identity_id for a in assigned if a is not None]
    assert len(names) == len(set(names))
    assert all(a.distance <= threshold for a in assigned if a is not None)
    # Brute force: the maximum number of faces named, then the minimum total distance, is reached.
    options = [[None] + [h for h in face if h.distance <= threshold] for face in hits]
    best_key = None
    for combo in itertools.product(*options):
        ids = [c.identity_id for c in combo if c is not None]
        if len(ids) != len(set(ids)):
            continue
        key = (-len(ids), sum(c.distance for c in combo if c is not None))
        best_key = key if best_key is None or key < best_key else best_key
    got = (-len(names), sum(a.distance for a in assigned if a is not None))
    assert got[0] == best_key[0]
    assert got[1] == pytest.approx(best_key[1], abs=1e-6)


def test_l2_distances_between_unit_vectors() -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(size=(20, 8)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = g[3]
    np.testing.assert_allclose(l2_distances(q, g), np.linalg.norm(g - q, axis=1), atol=1e-3)


@pytest.mark.parametrize("bad", [0.0, -0.1, 2.0001, float("nan"), float("inf")])
def test_threshold_outside_range_is_refused(bad: float) -> None:
    with pytest.raises(InvalidRequest, match="outside"):
        validate_threshold(bad)


def test_top_k_bounds() -> None:
    assert validate_top_k(0, default=5, maximum=100) == 5
    assert validate_top_k(100, default=5, maximum=100) == 100
    for bad in (-1, 101, 10**9):
        with pytest.raises(InvalidRequest):
            validate_top_k(bad, default=5, maximum=100)
