"""The accuracy tools on the `faceid` CLI (eval, calibrate, train, reindex), trained models found by id, the
gallery's model switch, and a Siamese head deciding Verify. Real photos of a few people, real weights."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import FACES_DIR, MODELS_DIR, NO_FACE_DIR
from faceid.client.cli import app as faceid_cli
from faceid.indexer.errors import ChecksumMismatch, FailedPrecondition, InvalidRequest, UnknownModel
from faceid.indexer.reindex import choose_source_model
from faceid.indexer.store import NewFace, create_store

DEFAULT = "facenet-20170512-128d"
PEOPLE = ("barack_obama", "joe_biden", "naomi_watts", "serena_williams")
TRAINED = "faces-cli-ft"
HEAD = "faces-cli-head"


def _invoke(*args: str) -> dict:
    result = CliRunner().invoke(faceid_cli, [*args, "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------------ without torch
def test_accuracy_commands_without_the_engine_say_what_to_install(tmp_path: Path) -> None:
    """The client stays usable without faceid.indexer (and torch): the tools exit 2 naming the package."""
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in ("torch", "faceid.indexer") or name.startswith(("torch.", "faceid.indexer.")):
            raise ImportError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Block())
from typer.testing import CliRunner
from faceid.client.cli import app
d = {str(tmp_path)!r}
for args in (["eval", "pairs", d], ["eval", "identify", d], ["calibrate", d], ["train", "triplet", d, "--model-id", "x"],
             ["train", "siamese", d, "--head-id", "h"], ["reindex", "--model", "x", "--database", "sqlite:///x.db"]):
    r = CliRunner().invoke(app, args)
    print(r.exit_code, "faceid-indexer" in r.output and "uv sync" in r.output)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == ["2 True"] * 6


# ------------------------------------------------------------------------------------- cheap checks
def test_choose_source_model() -> None:
    assert choose_source_model({"a": 3, "b": 0}, "b", None) == "a"
    assert choose_source_model({"a": 3, "c": 2}, "b", "c") == "c"
    with pytest.raises(InvalidRequest, match="several models"):
        choose_source_model({"a": 3, "c": 2}, "b", None)
    with pytest.raises(InvalidRequest, match="nothing to reindex"):
        choose_source_model({"b": 3}, "b", None)
    with pytest.raises(InvalidRequest, match="no faces of 'x'"):
        choose_source_model({"a": 3}, "b", "x")


def _face(model: str, seed: int, sha: str) -> NewFace:
    v = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return NewFace(model, v / np.linalg.norm(v), sha, (1.0, 2.0, 50.0, 60.0), 0.99, b"jpeg")


def test_store_switch_is_one_transaction_that_keeps_concurrent_relabels(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'g.db'}")
    store.enroll(name="ada", faces=[_face("old", 1, "a" * 64), _face("old", 2, "b" * 64)])
    store.enroll(name="bob", faces=[_face("old", 3, "c" * 64)])
    sources = store.reindex_sources("old")
    assert [s.thumbnail for s in sources] == [b"jpeg"] * 3
    twins = {s.face_id: _face("new", 10 + s.face_id, s.image_sha256) for s in sources}
    # Meanwhile: a merge (kept) and a new face (no twin: the switch must refuse and change nothing).
    store.merge_identities(source="bob", target="ada")
    late = store.add_faces(identity_id=None, faces=[_face("old", 4, "d" * 64)])[0].face_id
    before = store.checksum("old")
    with pytest.raises(FailedPrecondition, match="added while"):
        store.switch_model(source_model="old", target_model="new", replacements=twins)
    assert store.checksum("old") == before and store.count_faces("new") == 0
    done = store.switch_model(source_model="old", target_model="new", replacements=twins, dropped=[late])
    assert (done.written, done.deleted) == (3, 4)
    assert store.face_counts_by_model() == {"new": 3}
    ada = store.get_identity(name="ada")
    assert len(store.faces_of_identity(ada.id, "new")) == 3  # bob's face followed the merge
    assert store.list_audit(action_prefix="gallery.reindex")[-1].details["faces_dropped"] == 1
    with pytest.raises(FailedPrecondition, match="already holds 3 faces"):
        store.enroll(name="cy", faces=[_face("old", 5, "e" * 64)])
        store.switch_model(source_model="old", target_model="new", replacements={})
    store.close()


# ----------------------------------------------------------------------------------- on real photos
@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("people")
    for person in PEOPLE:
        (root / person).mkdir()
        for photo in sorted((FACES_DIR / person).glob("*.jpg"))[:3]:
            (root / person / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def trained(people: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`faceid train triplet` and `faceid train siamese` into one model folder; returns it."""
    models = tmp_path_factory.mktemp("models")
    out = _invoke("train", "triplet", str(people), "--model-id", TRAINED, "--model-dir", str(MODELS_DIR),
                  "--out-dir", str(models), "--device", "cpu", "--epochs", "1", "--p", "4", "--k", "2",
                  "--margin", "0.8", "--lr", "1e-3")
    assert out["model_id"] == TRAINED and [h["epoch"] for h in out["history"]] == [0, 1]
    assert out["detection_failures"] == [] and 0.5 < out["tau"] < 1.5
    head = _invoke("train", "siamese", str(people), "--head-id", HEAD, "--feature", "chi2",
                   "--model-dir", str(MODELS_DIR), "--out-dir", str(models), "--device", "cpu")
    assert head["pairs_val"] > 0 and head["val_auc_head"] is not None
    return models


@pytest.mark.slow
def test_eval_pairs_cli_reports_failures_and_matches_reference_embeddings(people: Path, tmp_path: Path) -> None:
    from face_crops import face_crops
    from sklearn.metrics import roc_auc_score

    photos = sorted(p for d in people.iterdir() for p in d.iterdir())
    brick = NO_FACE_DIR / "brick_texture.jpg"
    rows = [(a, b, int(a.parent.name == b.parent.name)) for i, a in enumerate(photos) for b in photos[i + 1 :]]
    with (tmp_path / "pairs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "same"])
        w.writerows([*rows, (photos[0], brick, 0)])
    roc = tmp_path / "roc.png"
    out = _invoke("eval", "pairs", str(tmp_path / "pairs.csv"), "--model-dir", str(MODELS_DIR), "--device", "cpu",
                  "--roc", str(roc))
    r = out["report"]
    assert (out["pairs"], out["pairs_evaluated"], out["pairs_skipped"]) == (len(rows) + 1, len(rows), 1)
    assert [f["path"] for f in out["detection_failures"]] == [str(brick)]
    same = np.array([s for *_, s in rows], bool)
    assert (r["n_same"], r["n_different"]) == (int(same.sum()), int((~same).sum()))
    # Independently: the reference facenet-pytorch embeddings of the same photos, sklearn's AUC.
    fc = face_crops()
    ref = {p.resolve(): e for p, e in zip(fc.paths, fc.embeddings, strict=True)}
    d = np.array([np.linalg.norm(ref[a.resolve()] - ref[b.resolve()]) for a, b, _ in rows])
    assert r["auc"] == pytest.approx(roc_auc_score(same, -d), abs=0.01)
    fars = {op["target_far"]: op for op in r["tar_at_far"]}
    assert fars[0.1]["tar"] is not None and fars[0.1]["n_different"] == 54
    assert fars[0.001]["tar"] is None and "not enough pairs" in fars[0.001]["note"]  # 54 pairs: no 1e-3 figure
    assert roc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_calibrate_stores_tau_that_eval_identify_then_uses(people: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cal.db'}"
    out = _invoke("calibrate", str(people), "--target-far", "0.1", "--database", url, "--model-dir", str(MODELS_DIR),
                  "--device", "cpu")
    cal = out["calibration"]
    assert out["stored_in"] == url and cal["far"] <= 0.1 and cal["n_different"] == 54
    store = create_store(url)
    row = store.get_calibration(DEFAULT)
    store.close()
    assert row is not None and row.threshold == pytest.approx(cal["tau"])
    assert (row.logistic_a, row.logistic_b) == pytest.approx((cal["intercept"], cal["slope"]))
    ident = _invoke("eval", "identify", str(people), "--database", url, "--model-dir", str(MODELS_DIR),
                    "--device", "cpu", "--stranger-folds", "4", "--gallery-per-identity", "2")
    assert ident["report"]["tau"] == pytest.approx(cal["tau"])  # the stored calibration is the operating point
    assert ident["report"]["n_known"] + ident["report"]["n_unknown"] > 0 and ident["splits"] == 4


@pytest.mark.slow
def test_trained_model_found_by_id_and_checked(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faceid.indexer.models import resolve_model

    monkeypatch.setenv("FACEID_MODEL_DIR", f"{MODELS_DIR}:{trained}")
    spec, folder = resolve_model(TRAINED)
    assert (spec.name, spec.dimension, folder) == (TRAINED, 128, trained / TRAINED)
    tampered = tmp_path / "tampered"
    shutil.copytree(trained / TRAINED, tampered / TRAINED)
    weights = tampered / TRAINED / "model-00001-of-00001.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        resolve_model(TRAINED, model_dir=tampered)
    with pytest.raises(UnknownModel, match="not registered"):
        resolve_model("no-such-model")


@pytest.mark.slow
def test_reindex_switches_the_gallery_to_a_trained_model(
    people: Path, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faceid.indexer.config import EngineConfig
    from faceid.indexer.engine import FaceEngine

    monkeypatch.setenv("FACEID_MODEL_DIR", f"{MODELS_DIR}:{trained}")
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    photos = {p: sorted((people / p).iterdir()) for p in PEOPLE}
    engine = FaceEngine.open(EngineConfig(database_url=url, model=DEFAULT, device="cpu"))
    try:
        for person in PEOPLE:
            engine.enroll(person, [f.read_bytes() for f in photos[person][:2]])
        old_ids = {f.id for p in PEOPLE for f in engine.get_identity(name=p).faces}
    finally:
        engine.close()
    originals = tmp_path / "originals"  # originals of two people; the others come from their thumbnails
    for person in PEOPLE[:2]:
        shutil.copytree(people / person, originals / person, symlinks=False)

    result = CliRunner().invoke(faceid_cli, ["reindex", "--model", "faces-unknown", "--database", url, "--no-progress"])
    assert result.exit_code == 2 and "faces-unknown" in result.output  # an unknown model changes nothing
    out = _invoke("reindex", "--model", TRAINED, "--database", url, "--originals", str(originals), "--device", "cpu")
    assert (out["source_model"], out["target_model"], out["faces"]) == (DEFAULT, TRAINED, 8)
    assert (out["from_originals"], out["from_thumbnails"], out["deleted"], out["dropped"]) == (4, 4, 8, [])

    engine = FaceEngine.open(EngineConfig(database_url=url, model=TRAINED, device="cpu"))
    try:
        assert engine.store.face_counts_by_model() == {TRAINED: 8}  # old vectors gone: no mixing
        status = engine.check_index(rebuild=False)
        assert status.consistent and status.vectors == 8 and status.checksum == out["checksum"]
        for person in PEOPLE:
            info = engine.get_identity(name=person)
            assert info.face_count == 2 and all(f.model == TRAINED for f in info.faces)
            assert not old_ids & {f.id for f in info.faces}
            found = engine.identify(photos[person][2].read_bytes())  # a photo never enrolled
            assert found.model == TRAINED and found.faces[0].identity == person
        with pytest.raises(FailedPrecondition, match="trained on embeddings of"):
            from faceid.indexer.verifier_head import load_verifier_head

            load_verifier_head(HEAD, TRAINED)
    finally:
        engine.close()


@pytest.mark.slow
def test_siamese_head_decides_verify(people: Path, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faceid.indexer.config import EngineConfig
    from faceid.indexer.engine import FaceEngine
    from faceid.indexer.training.export import load_siamese_head

    monkeypatch.setenv("FACEID_MODEL_DIR", f"{MODELS_DIR}:{trained}")
    head, base = load_siamese_head(trained / HEAD)
    assert base == DEFAULT
    a, b = sorted((people / PEOPLE[0]).iterdir())[:2]
    c = sorted((people / PEOPLE[1]).iterdir())[0]
    engine = FaceEngine.open(EngineConfig(database_url=f"sqlite:///{tmp_path / 'v.db'}", model=DEFAULT, device="cpu",
                                          verifier_head=HEAD))
    try:
        ea, eb, ec = (engine.embed(p.read_bytes()).faces[0].embedding for p in (a, b, c))
        same = engine.verify(a.read_bytes(), image_b=b.read_bytes())
        other = engine.verify(a.read_bytes(), image_b=c.read_bytes())
        assert same.decided_by == other.decided_by == f"siamese:{HEAD}"
        assert same.probability == pytest.approx(float(head.probability(ea, eb)[0]), abs=1e-6)
        assert other.probability == pytest.approx(float(head.probability(ea, ec)[0]), abs=1e-6)
        assert same.match == (same.probability >= 0.5) and other.match == (other.probability >= 0.5)
        assert same.match and not other.match
        by_distance = engine.verify(a.read_bytes(), image_b=c.read_bytes(), threshold=1.9)  # a request's tau wins
        assert by_distance.decided_by == "distance" and by_distance.match
    finally:
        engine.close()


@pytest.mark.slow
def test_eval_pairs_cli_reads_an_lfw_pairs_file(people: Path, tmp_path: Path) -> None:
    """`faceid eval pairs pairs.txt --images DIR --pattern P`: LFW's format, folds included, same numbers as computed
    independently from the reference embeddings."""
    from face_crops import face_crops
    from sklearn.metrics import roc_auc_score

    a, b, c, d = PEOPLE
    # 2 folds of 2 matched + 2 mismatched pairs (LFW: the header says folds and pairs per fold; matched first)
    lines = ["2\t2",
             f"{a}\t1\t2", f"{b}\t1\t3", f"{a}\t1\t{b}\t2", f"{c}\t3\t{d}\t1",
             f"{c}\t1\t2", f"{d}\t2\t3", f"{a}\t3\t{d}\t3", f"{b}\t2\t{c}\t2"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    out = _invoke("eval", "pairs", str(tmp_path / "pairs.txt"), "--images", str(people), "--pattern",
                  "{name}/{num:02d}.jpg", "--model-dir", str(MODELS_DIR), "--device", "cpu")
    r = out["report"]
    assert (out["pairs"], out["pairs_evaluated"], out["pairs_skipped"]) == (8, 8, 0)
    assert (r["n_same"], r["n_different"]) == (4, 4)
    fc = face_crops()
    ref = {p.resolve(): e for p, e in zip(fc.paths, fc.embeddings, strict=True)}

    def photo(name: str, num: str) -> Path:
        return (people / name / f"{int(num):02d}.jpg").resolve()

    same, dist = [], []
    for line in lines[1:]:
        f = line.split("\t")
        x, y = (photo(f[0], f[1]), photo(f[0], f[2])) if len(f) == 3 else (photo(f[0], f[1]), photo(f[2], f[3]))
        same.append(len(f) == 3)
        dist.append(float(np.linalg.norm(ref[x] - ref[y])))
    assert r["auc"] == pytest.approx(roc_auc_score(same, -np.array(dist)), abs=0.01)
