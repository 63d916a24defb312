"""The FAISS vector index: exact answers, strict inputs, equal to the store (checksum, rebuild), thread-safe.

The GPU path runs here with the GPU calls replaced by their CPU equivalents (no GPU on this machine); every
other part is real: FAISS, numpy brute force, a real SQLite gallery.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceid.indexer import vector_index as vi
from faceid.indexer.store import GalleryStore, IdChecksum, NewFace, create_store, id_checksum
from faceid.indexer.vector_index import VectorIndex

DIM = 16
MODEL = "test-model-16d"


def unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(ids: np.ndarray, x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference answer: L2 distances computed directly, k smallest, ascending."""
    d = np.linalg.norm(q[:, None, :].astype(np.float64) - x[None, :, :], axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), ids[order]


def assert_distances_close(d: np.ndarray, ref: np.ndarray) -> None:
    """Compare in similarity space (1 - d²/2, what FAISS computes in float32): sqrt(2 - 2·ip) amplifies
    float32 round-off near d = 0 to ~5e-4 (a face against itself), while similarities agree to ~1e-6."""
    np.testing.assert_allclose(1 - d.astype(np.float64) ** 2 / 2, 1 - ref**2 / 2, atol=1e-5)
    np.testing.assert_allclose(d, ref, atol=1e-3)


@pytest.fixture
def gpu_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend one GPU exists: only the calls that need the device are replaced (by CPU clones)."""
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    clones: list[object] = []

    def to_gpu(_res: object, device: int, index: faiss.Index) -> faiss.Index:
        assert device == 0 and isinstance(faiss.downcast_index(index), faiss.IndexFlatIP)  # a bare flat index
        clone = faiss.clone_index(index)
        clones.append(clone)
        return clone

    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)


@pytest.fixture
def store(tmp_path: Path):
    with create_store(f"sqlite:///{tmp_path / 'gallery.db'}") as s:
        yield s


def stored_faces(n: int, seed: int, model: str = MODEL, dim: int = DIM) -> list[NewFace]:
    x = unit_rows(n, dim, seed)
    return [
        NewFace(model, x[i], hashlib.sha256(f"{seed}-{i}".encode()).hexdigest(), (0.0, 0.0, 40.0, 40.0), 0.99)
        for i in range(n)
    ]


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("use_gpu", [False, True], ids=["cpu", "gpu-emulated"])
def test_search_equals_numpy_brute_force(use_gpu: bool, request: pytest.FixtureRequest) -> None:
    if use_gpu:
        request.getfixturevalue("gpu_emulated")
    x = unit_rows(3000, seed=1)
    ids = np.random.default_rng(2).choice(10**9, size=3000, replace=False).astype(np.int64)
    index = VectorIndex(DIM, MODEL)
    assert index.use_gpu is use_gpu and index.device == ("cuda:0" if use_gpu else "cpu")
    for start in range(0, 3000, 700):  # several adds, as commits arrive
        index.add(ids[start : start + 700], x[start : start + 700])
    q = unit_rows(40, seed=3)
    dist, got = index.search(q, 10)
    ref_d, ref_ids = brute_force(ids, x, q, 10)
    assert dist.dtype == np.float32 and got.dtype == np.int64 and dist.shape == got.shape == (40, 10)
    np.testing.assert_array_equal(got, ref_ids)
    assert_distances_close(dist, ref_d)
    # A stored vector finds itself at distance ~0.
    d_self, id_self = index.search(x[[5, 2999]], 1)
    assert id_self[:, 0].tolist() == [ids[5], ids[2999]] and float(d_self.max()) < 1e-3


def test_fewer_faces_than_k_pads_with_minus_one_and_inf() -> None:
    index = VectorIndex(DIM, MODEL)
    d, i = index.search(unit_rows(2), 3)
    assert i.tolist() == [[-1, -1, -1]] * 2 and np.isinf(d).all()
    index.add([7, 9], unit_rows(2, seed=5))
    d, i = index.search(unit_rows(1, seed=5), 4)
    assert i[0, 0] == 7 and sorted(i[0, :2].tolist()) == [7, 9] and i[0, 2:].tolist() == [-1, -1]
    assert np.isfinite(d[0, :2]).all() and np.isinf(d[0, 2:]).all()
    with pytest.raises(ValueError, match="k must be"):
        index.search(unit_rows(1), 0)


def test_invalid_input_is_refused_and_changes_nothing() -> None:
    index = VectorIndex(DIM, MODEL)
    index.add([1, 2], unit_rows(2))
    before = index.checksum()
    with pytest.raises(ValueError, match="not L2-normalised"):
        index.add([3], unit_rows(1) * 2)
    with pytest.raises(ValueError, match="not L2-normalised"):
        index.add([3], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"\(n, 16\)"):
        index.add([3], unit_rows(1, dim=8))
    with pytest.raises(ValueError, match="already in the index"):
        index.add([2, 3], unit_rows(2, seed=9))
    with pytest.raises(ValueError, match="repeat"):
        index.add([4, 4], unit_rows(2, seed=9))
    with pytest.raises(ValueError, match="≥ 0"):
        index.add([-1], unit_rows(1, seed=9))
    with pytest.raises(ValueError, match="ids for"):
        index.add([5, 6, 7], unit_rows(2, seed=9))
    with pytest.raises(ValueError, match="not L2-normalised"):
        index.search(unit_rows(1) * 10, 1)  # an unnormalised query would rank wrongly: refused
    assert index.checksum() == before and len(index) == 2
    with pytest.raises(ValueError, match="no GPU"):
        VectorIndex(DIM, MODEL, use_gpu=True)


def test_bulk_add_duplicate_check_uses_the_whole_id_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vi, "_PROBE_LIMIT", 4)
    index = VectorIndex(DIM, MODEL)
    index.add(np.arange(10), unit_rows(10))
    with pytest.raises(ValueError, match=r"already in the index: \[9\]"):
        index.add(np.arange(9, 20), unit_rows(11, seed=1))
    index.add(np.arange(10, 21), unit_rows(11, seed=1))
    assert len(index) == 21


@pytest.mark.parametrize("use_gpu", [False, True], ids=["cpu", "gpu-emulated"])
def test_remove(use_gpu: bool, request: pytest.FixtureRequest) -> None:
    if use_gpu:
        request.getfixturevalue("gpu_emulated")
    x = unit_rows(50, seed=4)
    ids = np.arange(100, 150, dtype=np.int64)
    index = VectorIndex(DIM, MODEL)
    index.add(ids, x)
    assert index.remove([100, 120, 120, 999]) == 2
    assert index.remove([]) == 0 and len(index) == 48
    keep = ~np.isin(ids, [100, 120])
    d, got = index.search(x, 48)
    ref_d, ref_ids = brute_force(ids[keep], x[keep], x, 48)
    np.testing.assert_array_equal(got, ref_ids)
    assert_distances_close(d, ref_d)
    index.add([120], x[20:21])  # a removed id can come back (the store never reuses ids, but the index allows it)
    assert index.search(x[20:21], 1)[1][0, 0] == 120


def test_gpu_answers_beyond_its_k_limit_come_from_the_cpu_master(
    gpu_emulated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vi, "GPU_MAX_K", 3)
    x = unit_rows(20, seed=6)
    index = VectorIndex(DIM, MODEL)
    index.add(np.arange(20), x)
    index.remove([0])
    _, small = index.search(x, 3)
    _, large = index.search(x, 10)
    np.testing.assert_array_equal(large[:, :3], small)
    np.testing.assert_array_equal(large, brute_force(np.arange(1, 20), x[1:], x, 10)[1])


# ------------------------------------------------------------------ equal to the store
def test_checksum_and_verify_follow_the_store(store: GalleryStore) -> None:
    index = VectorIndex(DIM, MODEL)
    assert index.verify(store)  # both empty
    a = store.enroll(name="a", faces=stored_faces(5, seed=1))
    b = store.add_faces(identity_id=None, faces=stored_faces(3, seed=2))
    # The server's path: add what the commit created.
    for added, faces in ((list(a.faces), stored_faces(5, seed=1)), (b, stored_faces(3, seed=2))):
        new = [(r.face_id, f.embedding) for r, f in zip(added, faces, strict=True) if r.created]
        index.add([i for i, _ in new], np.stack([v for _, v in new]))
    assert index.checksum() == store.checksum(MODEL) and index.verify(store)

    deleted = store.delete_identity(name="a")
    assert not index.verify(store)  # the index lags the commit until the removal is applied
    assert index.remove(deleted.faces_by_model[MODEL]) == 5
    assert index.verify(store) and index.checksum().count == 3

    stray = unit_rows(1, seed=99)
    index.add([10**12], stray)  # a vector the store does not hold
    assert not index.verify(store)
    assert index.rebuild_from(store) == 3 and index.verify(store)


@pytest.mark.parametrize("use_gpu", [False, True], ids=["cpu", "gpu-emulated"])
def test_rebuild_equals_the_store_and_never_mixes_models(
    store: GalleryStore, use_gpu: bool, request: pytest.FixtureRequest
) -> None:
    if use_gpu:
        request.getfixturevalue("gpu_emulated")
    store.enroll(name="a", faces=stored_faces(30, seed=1))
    store.add_faces(identity_id=None, faces=stored_faces(20, seed=2))
    store.add_faces(identity_id=None, faces=stored_faces(10, seed=3, model="other-8d", dim=8))
    index = VectorIndex(DIM, MODEL)
    index.add([10**9], unit_rows(1, seed=7))  # stale content, replaced by the rebuild
    assert index.rebuild_from(store, batch=7) == 50
    assert index.verify(store) and len(index) == 50

    ids = np.concatenate([i for i, _ in store.iter_embeddings(MODEL)])
    x = np.concatenate([v for _, v in store.iter_embeddings(MODEL)])
    d, got = index.search(x, 1)
    assert got[:, 0].tolist() == ids.tolist() and float(d.max()) < 1e-3  # each stored face finds itself
    q = unit_rows(5, seed=8)
    np.testing.assert_array_equal(index.search(q, 8)[1], brute_force(ids, x, q, 8)[1])

    other = VectorIndex(8, "other-8d")
    assert other.rebuild_from(store) == 10 and other.verify(store)
    assert not set(other.ids().tolist()) & set(index.ids().tolist())
    wrong_dim = VectorIndex(12, MODEL)  # a model id whose stored vectors do not fit: refused, not mixed
    with pytest.raises(ValueError, match=r"\(n, 12\)"):
        wrong_dim.rebuild_from(store)


def test_checksum_definition() -> None:
    ids = np.array([5, 1, 9, 3], dtype=np.int64)
    assert id_checksum(MODEL, ids) == id_checksum(MODEL, np.sort(ids))
    acc = IdChecksum(MODEL)
    acc.update([1, 3])
    acc.update([5, 9])
    assert acc.result() == id_checksum(MODEL, ids) and acc.result().count == 4
    with pytest.raises(ValueError, match="ascending"):
        acc.update([7])
    with pytest.raises(ValueError, match="duplicate"):
        id_checksum(MODEL, [1, 1])
    assert id_checksum(MODEL, ids) != id_checksum("another", ids)
    assert id_checksum(MODEL, ids) != id_checksum(MODEL, ids[:3])


# ------------------------------------------------------------------ properties and threads
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.integers(0, 60), min_size=1, max_size=8, unique=True)),
        st.tuples(st.just("remove"), st.lists(st.integers(0, 60), max_size=8)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops, k=st.integers(1, 70))
def test_add_remove_search_stay_consistent_with_a_plain_dict(ops: list[tuple[str, list[int]]], k: int) -> None:
    vectors = unit_rows(61, seed=11)  # face id i always has vector i
    index = VectorIndex(DIM, MODEL)
    model: dict[int, np.ndarray] = {}
    for op, ids in ops:
        if op == "add":
            fresh = [i for i in ids if i not in model]
            if len(fresh) < len(ids):
                with pytest.raises(ValueError):
                    index.add(ids, vectors[ids])
            if fresh:
                index.add(fresh, vectors[fresh])
                model.update((i, vectors[i]) for i in fresh)
        else:
            assert index.remove(ids) == len(set(ids) & model.keys())
            for i in ids:
                model.pop(i, None)
        assert len(index) == len(model)
        assert index.checksum() == id_checksum(MODEL, list(model))
    q = vectors[:5]
    d, got = index.search(q, k)
    if model:
        held = np.array(sorted(model), dtype=np.int64)
        ref_d, ref_ids = brute_force(held, vectors[held], q, min(k, len(held)))
        np.testing.assert_array_equal(got[:, : len(held)], ref_ids)
        assert_distances_close(d[:, : len(held)], ref_d)
    assert (got[:, len(model) :] == -1).all() and np.isinf(d[:, len(model) :]).all()


def test_concurrent_searches_while_adding_and_removing() -> None:
    x = unit_rows(4000, seed=12)
    index = VectorIndex(DIM, MODEL)
    index.add(np.arange(1000), x[:1000])
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                d, got = index.search(x[:8], 5)
                assert (got[:, 0] >= 0).all() and np.isfinite(d[:, 0]).all()
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=searcher) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for start in range(1000, 4000, 100):
            index.add(np.arange(start, start + 100), x[start : start + 100])
            index.remove(np.arange(start - 1000 + 50, start - 1000 + 60))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert errors == []
    removed = {i for s in range(1000, 4000, 100) for i in range(s - 950, s - 940)}
    assert index.checksum() == id_checksum(MODEL, [i for i in range(4000) if i not in removed])
