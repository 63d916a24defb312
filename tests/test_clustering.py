"""Clustering engine: spherical K-means quality and speed-independent guarantees, automatic K, metrics,
outliers, projection and naming, on real FaceNet embeddings of shared/data/faces and on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from face_crops import face_crops
from faceid.indexer.clustering import (
    choose_k,
    cluster,
    find_outliers,
    gpu_available,
    nearest_identities,
    pca_2d,
    spherical_blobs,
    spherical_inertia,
    spherical_kmeans,
)
from faceid.indexer.errors import EmptyGallery, InvalidRequest

TAU = 1.02  # the default model's card


@pytest.fixture(scope="module")
def faces():
    return face_crops()


# ------------------------------------------------------------------------------------------ real faces


@pytest.mark.slow
def test_k_equal_to_people_recovers_the_identities(faces) -> None:
    people = sorted(set(faces.people))
    result = cluster(faces.embeddings, k=len(people), labels=list(faces.people), threshold=TAU, seed=0)
    assert result.k == 16
    assert result.metrics.nmi is not None and result.metrics.nmi >= 0.9, result.metrics
    assert result.metrics.labeled_faces == len(faces.people)
    assert 0.0 < result.metrics.silhouette <= 1.0
    assert result.kmeans.sizes().sum() == len(faces.people)
    # Correctly clustered people are not outliers: their faces lie well within τ of their centroid.
    if result.metrics.purity == 1.0:
        assert not result.outliers.any(), result.kmeans.distance[result.outliers]


@pytest.mark.slow
def test_automatic_k_lands_within_one_of_the_number_of_people(faces) -> None:
    steps: list[tuple[str, float]] = []
    result = cluster(
        faces.embeddings,
        k_range=range(8, 25),
        labels=list(faces.people),
        threshold=TAU,
        seed=0,
        progress=lambda stage, fraction: steps.append((stage, fraction)),
    )
    assert abs(result.k - 16) <= 1, result.k_scores
    assert sorted(result.k_scores) == list(range(8, 25))
    assert result.k_scores[result.k] == max(result.k_scores.values())
    stages = [s for s, _ in steps]
    assert stages[0] == "choosing_k" and "scoring" in stages and "projecting" in stages
    assert [f for s, f in steps if s == "choosing_k"][-1] == 1.0


@pytest.mark.slow
def test_a_planted_stranger_is_flagged_as_outlier(faces) -> None:
    """One face of person B among person A's photos, clustered as one cluster: B must stand out."""
    x, people = faces.embeddings, np.array(faces.people)
    names = sorted(set(people))
    flagged = total = 0
    for a in names:
        own = x[people == a]
        for b in names:
            if b == a:
                continue
            for intruder in np.flatnonzero(people == b)[:1]:
                mixed = np.vstack([own, x[intruder : intruder + 1]])
                result = spherical_kmeans(mixed, 1, seed=0)
                flags = find_outliers(result.distance, result.assign, threshold=TAU)
                assert not flags[:-1].any(), f"{a}'s own faces flagged"
                flagged += int(flags[-1])
                total += 1
    assert flagged / total >= 0.9, f"{flagged}/{total} strangers flagged"


@pytest.mark.slow
def test_each_cluster_is_named_after_the_nearest_enrolled_identity(faces) -> None:
    x, people = faces.embeddings, np.array(faces.people)
    labeled = np.arange(len(people)) % 2 == 0  # every other photo is "enrolled"; all are clustered

    def search(queries: np.ndarray) -> list[tuple[str, int, float]]:
        d = np.linalg.norm(queries[:, None, :] - x[labeled][None, :, :], axis=2)
        best = d.argmin(axis=1)
        return [(str(people[labeled][j]), int(j), float(d[i, j])) for i, j in enumerate(best)]

    result = cluster(x, k=16, labels=list(people), threshold=TAU, seed=0, search=search)
    assert len(result.nearest) == 16
    for named in result.nearest:
        members = people[result.kmeans.assign == named.cluster]
        majority = max(set(members), key=list(members).count)
        assert named.identity == majority
        assert named.within_threshold and named.distance is not None and named.distance <= TAU


@pytest.mark.slow
def test_same_seed_same_clusters_on_faces(faces) -> None:
    a = spherical_kmeans(faces.embeddings, 16, seed=3)
    b = spherical_kmeans(faces.embeddings, 16, seed=3)
    np.testing.assert_array_equal(a.assign, b.assign)
    np.testing.assert_array_equal(a.centroids, b.centroids)


# --------------------------------------------------------------------------------------- synthetic


@pytest.fixture(scope="module")
def blobs():
    return spherical_blobs(2000, 32, 20, seed=7)


def test_result_shapes_and_invariants(blobs) -> None:
    r = spherical_kmeans(blobs.x, 20, seed=0, niter=10)
    assert r.centroids.shape == (20, 32) and r.centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(r.centroids, axis=1), 1.0, atol=1e-5)
    assert r.assign.shape == (2000,) and r.assign.dtype == np.int64
    assert r.sizes().min() >= 1  # FAISS re-seeds empty clusters
    # assign is the closest centroid, and inertia is the spherical inertia of those centroids
    np.testing.assert_array_equal(r.assign, np.argmax(blobs.x @ r.centroids.T, axis=1))
    assert r.inertia == pytest.approx(spherical_inertia(blobs.x, r.centroids), rel=1e-5)
    assert r.iterations == 10 and r.seconds >= r.seed_seconds >= 0.0 and r.device == "cpu"


def test_same_seed_same_result_other_seed_other_start(blobs) -> None:
    a = spherical_kmeans(blobs.x, 20, seed=11)
    b = spherical_kmeans(blobs.x, 20, seed=11)
    c = spherical_kmeans(blobs.x, 20, seed=12)
    np.testing.assert_array_equal(a.assign, b.assign)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia
    assert not np.array_equal(a.centroids, c.centroids)


@pytest.mark.parametrize(("n", "d", "k"), [(2000, 32, 20), (60, 16, 12)])  # k-means‖ path; small-n greedy path
def test_inertia_within_one_percent_of_sklearn_kmeanspp(n: int, d: int, k: int) -> None:
    ours = theirs = 0.0
    for seed in range(3):
        data = spherical_blobs(n, d, k, seed=100 + seed)
        ours += spherical_kmeans(data.x, k, seed=seed, niter=20).inertia
        km = KMeans(n_clusters=k, init="k-means++", max_iter=20, random_state=seed).fit(data.x)
        theirs += spherical_inertia(data.x, km.cluster_centers_.astype(np.float32))
    assert ours <= theirs * 1.01, (ours, theirs)


def test_seeding_beats_random_init(blobs) -> None:
    seeded = spherical_kmeans(blobs.x, 20, seed=0, niter=5)
    random = spherical_kmeans(blobs.x, 20, seed=0, niter=5, init="random")
    assert seeded.inertia < random.inertia


def test_n_init_keeps_the_best_run(blobs) -> None:
    single = [spherical_kmeans(blobs.x, 20, seed=s, niter=3).inertia for s in range(3)]
    best = spherical_kmeans(blobs.x, 20, seed=0, niter=3, n_init=3)
    assert best.inertia == pytest.approx(min(single))


@pytest.mark.parametrize("k", [0, -1, 2001])
def test_k_out_of_range_is_invalid(blobs, k: int) -> None:
    with pytest.raises(InvalidRequest, match="k must be between 1 and the number of faces"):
        spherical_kmeans(blobs.x, k)


def test_other_bad_arguments_are_invalid(blobs) -> None:
    with pytest.raises(InvalidRequest, match="non-empty"):
        spherical_kmeans(np.zeros((0, 8), np.float32), 1)
    bad = blobs.x[:10].copy()
    bad[3, 0] = np.nan
    with pytest.raises(InvalidRequest, match="NaN"):
        spherical_kmeans(bad, 2)
    with pytest.raises(InvalidRequest, match="init"):
        spherical_kmeans(blobs.x, 2, init="kmeans||")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="niter"):
        spherical_kmeans(blobs.x, 2, niter=-1)
    with pytest.raises(InvalidRequest, match="empty"):
        choose_k(blobs.x, [])
    with pytest.raises(InvalidRequest, match="2 <= K"):
        choose_k(blobs.x[:10], range(1, 5))
    with pytest.raises(InvalidRequest, match="2 <= K"):
        choose_k(blobs.x[:10], range(5, 11))
    with pytest.raises(InvalidRequest, match="either k or a range"):
        cluster(blobs.x, k=3, k_range=range(2, 4))
    with pytest.raises(EmptyGallery):
        cluster(np.zeros((0, 32), np.float32), k=1)


def test_k_equals_n_and_duplicates_are_handled() -> None:
    x = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # 12 points, 4 distinct
    r = spherical_kmeans(x, 4, seed=0)
    assert r.inertia == pytest.approx(0.0, abs=1e-5)
    assert len(set(r.assign.tolist())) == 4
    everyone = spherical_kmeans(x[::3], 4, seed=0)  # k = n
    assert sorted(everyone.assign.tolist()) == [0, 1, 2, 3]


def test_gpu_request_without_gpu_says_what_to_install(blobs) -> None:
    if gpu_available():
        r = spherical_kmeans(blobs.x, 20, seed=0, use_gpu=True)
        assert r.device == "cuda"
    else:
        with pytest.raises(RuntimeError, match="faiss-gpu"):
            spherical_kmeans(blobs.x, 20, seed=0, use_gpu=True)


def test_metrics_against_known_labels(blobs) -> None:
    result = cluster(blobs.x, k=20, labels=[int(v) for v in blobs.labels], seed=0, n_init=1)
    m = result.metrics
    assert m.nmi is not None and m.ari is not None and m.purity is not None
    assert m.nmi > 0.95 and m.purity > 0.9 and m.ari > 0.85
    shuffled = cluster(blobs.x, k=20, labels=list(np.random.default_rng(0).permutation(blobs.labels)), seed=0, n_init=1)
    assert shuffled.metrics.nmi < 0.2 and abs(shuffled.metrics.ari) < 0.05
    unlabeled = cluster(blobs.x, k=20, labels=[None] * 2000, seed=0, n_init=1)
    assert unlabeled.metrics.nmi is None and unlabeled.metrics.labeled_faces == 0


def test_outlier_rules() -> None:
    assign = np.zeros(12, dtype=np.int64)
    distance = np.full(12, 0.40, dtype=np.float32) + np.linspace(0, 0.05, 12, dtype=np.float32)
    assert not find_outliers(distance, assign, threshold=TAU).any()
    far = distance.copy()
    far[5] = 0.95  # within τ but far beyond its cluster's spread: robust z-score
    assert find_outliers(far, assign, threshold=TAU).tolist() == [i == 5 for i in range(12)]
    beyond = distance[:4].copy()
    beyond[0] = 1.10  # small cluster: only the τ rule applies
    assert find_outliers(beyond, assign[:4], threshold=TAU).tolist() == [True, False, False, False]
    assert not find_outliers(beyond, assign[:4], threshold=None).any()


def test_pca_matches_sklearn_up_to_sign(blobs) -> None:
    p = pca_2d(blobs.x)
    ref = PCA(n_components=2).fit_transform(blobs.x.astype(np.float64))
    for axis in range(2):
        corr = np.corrcoef(p[:, axis], ref[:, axis])[0, 1]
        assert abs(corr) > 0.9999
    np.testing.assert_array_equal(p, pca_2d(blobs.x))
    assert pca_2d(blobs.x[:1]).tolist() == [[0.0, 0.0]]


def test_nearest_identities_reports_missing_gallery() -> None:
    named = nearest_identities(
        np.eye(3, dtype=np.float32) * 2, lambda q: [("ann", 1, 0.5), None, ("bob", 2, 1.5)], threshold=TAU
    )
    assert [(n.identity, n.within_threshold) for n in named] == [("ann", True), (None, False), ("bob", False)]
