"""FaceEngine.cluster / name_cluster / name_faces / merge_identities on a real engine (real weights, a
real SQLite store in tmp, real photos of 6 people: 4 enrolled by name, 2 stored unlabeled)."""

from __future__ import annotations

from collections.abc import Iterator
import pytest
from conftest import MODELS_DIR, person_photos
from faceid.indexer import errors
from faceid.indexer.clustering_service import KEPT_RUNS, Scope
from faceid.indexer.config import EngineConfig
from faceid.indexer.engine import FaceEngine

LABELED = ["barack_obama", "serena_williams", "naomi_watts", "hugo_chavez"]
UNLABELED = ["joe_biden", "kit_harington"]
PEOPLE = LABELED + UNLABELED


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceEngine]:
    mp = pytest.MonkeyPatch()
    mp.setenv("FACEID_MODEL_DIR", str(MODELS_DIR))
    db = tmp_path_factory.mktemp("cluster") / "gallery.db"
    eng = FaceEngine.open(EngineConfig(database_url=f"sqlite:///{db}", device="cpu", allow_model_fetch=False))
    yield eng
    eng.close()
    mp.undo()


@pytest.fixture(scope="module")
def gallery(engine: FaceEngine) -> dict[str, list[int]]:
    """person -> stored face ids; the unlabeled people's photos minus the last one (kept as a query)."""
    faces: dict[str, list[int]] = {}
    for person in PEOPLE:
        photos = person_photos(person)
        if person in UNLABELED:
            photos = photos[:-1]
        for photo in photos:
            out = engine.enroll_image(person if person in LABELED else None, photo.read_bytes())
            assert out.outcome.face_id is not None, (photo, out.outcome)
            faces.setdefault(person, []).append(out.outcome.face_id)
    return faces


@pytest.mark.slow  # loads the model
def test_empty_gallery_is_refused(engine: FaceEngine) -> None:
    # Runs before `gallery` fills the store (tests of a module run in file order).
    assert engine.store.count_faces() == 0
    with pytest.raises(errors.EmptyGallery):
        engine.cluster(k=2)
    with pytest.raises(errors.EmptyGallery):
        engine.cluster(scope=Scope.UNLABELED, k=1)


@pytest.mark.slow
def test_k_equal_to_people_recovers_them(engine: FaceEngine, gallery: dict[str, list[int]]) -> None:
    steps: list[str] = []
    run = engine.cluster(k=len(PEOPLE), seed=0, progress=lambda stage, f: steps.append(stage))
    n = sum(len(v) for v in gallery.values())
    assert len(run.face_ids) == n and run.result.k == len(PEOPLE)
    m = run.result.metrics
    assert m.labeled_faces == sum(len(gallery[p]) for p in LABELED)
    assert m.nmi is not None and m.nmi >= 0.9, m
    assert "clustering" in steps and "naming" in steps
    # Each labeled person's cluster names that person as its nearest identity.
    for person in LABELED:
        clusters = {int(run.result.kmeans.assign[list(run.face_ids).index(f)]) for f in gallery[person]}
        assert len(clusters) == 1, (person, clusters)
        assert run.result.nearest[clusters.pop()].identity == person


@pytest.mark.slow
def test_bad_arguments(engine: FaceEngine, gallery: dict[str, list[int]]) -> None:
    n = sum(len(v) for v in gallery.values())
    with pytest.raises(errors.InvalidRequest):
        engine.cluster(k=0)
    with pytest.raises(errors.InvalidRequest):
        engine.cluster(k=n + 1)
    with pytest.raises(errors.UnknownIdentity):
        engine.cluster(scope=Scope.IDENTITIES, identities=["barack_obama", "nobody_here"], k=2)
    run = engine.cluster(scope=Scope.IDENTITIES, identities=["barack_obama", "serena_williams"], k=2)
    assert sorted(run.face_ids.tolist()) == sorted(gallery["barack_obama"] + gallery["serena_williams"])
    unl = engine.cluster(scope=Scope.UNLABELED, k=2)
    assert sorted(unl.face_ids.tolist()) == sorted(gallery["joe_biden"] + gallery["kit_harington"])
    with pytest.raises(errors.InvalidRequest):
        engine.name_cluster(unl.run_id, 2, "someone")


@pytest.mark.slow
def test_naming_a_cluster_makes_its_faces_identify(engine: FaceEngine, gallery: dict[str, list[int]]) -> None:
    run = engine.cluster(scope=Scope.UNLABELED, k=2, seed=0)
    index_before = engine.index.checksum()
    target = gallery["joe_biden"][0]
    cluster_index = int(run.result.kmeans.assign[list(run.face_ids).index(target)])
    named = engine.name_cluster(run.run_id, cluster_index, "joe_biden")
    assert sorted(named.face_ids) == sorted(gallery["joe_biden"])
    query = person_photos("joe_biden")[-1].read_bytes()  # not stored
    (face,) = engine.identify(query).faces
    assert face.identity == "joe_biden" and not face.unknown
    assert engine.index.checksum() == index_before  # same vectors: the index is untouched

    # Name one face of the other person, then merge that identity into a new name's holder.
    kit = gallery["kit_harington"]
    engine.name_faces(kit[:1], "kit_one")
    engine.name_faces(kit[1:], "kit_harington")
    merged = engine.merge_identities("kit_one", "kit_harington")
    assert sorted(merged.moved_face_ids) == kit[:1]
    assert engine.get_identity(name="kit_harington").face_count == len(kit)
    with pytest.raises(errors.UnknownIdentity):
        engine.get_identity(name="kit_one")


@pytest.mark.slow
def test_only_the_last_runs_are_kept(engine: FaceEngine, gallery: dict[str, list[int]]) -> None:
    first = engine.cluster(scope=Scope.IDENTITIES, identities=["barack_obama"], k=1, niter=2)
    for _ in range(KEPT_RUNS):
        engine.cluster(scope=Scope.IDENTITIES, identities=["barack_obama"], k=1, niter=2)
    with pytest.raises(errors.NotFound):
        engine.name_cluster(first.run_id, 0, "x")
