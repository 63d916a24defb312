"""Evaluation: pairs files, verification and open-set identification metrics, checked against independent
computations (sklearn.metrics directly, brute-force loops), on synthetic distances and on the real photos."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from conftest import FACES_DIR
from faceid.indexer.errors import InvalidRequest
from faceid.indexer.evaluation import (
    EmbeddedImages,
    ImagePair,
    all_pairs,
    cross_validated_accuracy,
    equal_error_rate,
    evaluate_identification,
    evaluate_pairs,
    format_identification_evaluation,
    format_pairs_evaluation,
    identification_report,
    identity_folders,
    lfw_style_pairs,
    open_set_splits,
    plot_roc,
    read_csv_pairs,
    read_lfw_pairs,
    read_pairs,
    roc,
    score_probes,
    tar_at_far,
    to_jsonable,
    verification_report,
    write_csv_pairs,
    write_lfw_pairs,
)


def synthetic(n_same: int = 400, n_diff: int = 4000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping same/different distance distributions (so EER, TAR@FAR are not trivial)."""
    rng = np.random.default_rng(seed)
    d = np.concatenate([rng.normal(0.85, 0.15, n_same), rng.normal(1.30, 0.12, n_diff)])
    return d, np.r_[np.ones(n_same, bool), np.zeros(n_diff, bool)]


# ------------------------------------------------------------------------------------------- pairs files
def test_lfw_pairs_round_trip_and_folds(tmp_path):
    people = identity_folders(FACES_DIR)
    pairs = lfw_style_pairs(people, n_folds=10, seed=3)
    assert len(pairs) == 10 * 2 * 16  # 165 same-person pairs allow 16 per fold
    path = tmp_path / "pairs.txt"
    write_lfw_pairs(path, pairs)
    assert path.read_text().splitlines()[0].split() == ["10", "16"]
    back = read_lfw_pairs(path, FACES_DIR, pattern="{name}/{num:02d}.jpg")
    assert back == pairs
    assert all(p.a.is_file() and p.b.is_file() for p in back)
    assert all((p.a.parent == p.b.parent) == p.same for p in back)
    assert len({frozenset((p.a, p.b)) for p in back}) == len(back)  # no pair twice


def test_lfw_pairs_real_lfw_layout_and_single_set_header(tmp_path):
    (tmp_path / "pairs.txt").write_text("1\t2\nAaron_Peirsol\t1\t2\nAaron_Peirsol\t3\t4\n"
                                        "AJ_Cook\t1\tMarsha_Thomason\t1\nAbdel_Madi_Shabneh\t1\tDean_Barker\t1\n")
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert pairs[0] == ImagePair(tmp_path / "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
                                 tmp_path / "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", True, 0)
    assert [p.same for p in pairs] == [True, True, False, False]
    (tmp_path / "dev.txt").write_text("1\nA\t1\t2\nA\t1\tB\t3\n")
    assert [p.fold for p in read_lfw_pairs(tmp_path / "dev.txt", tmp_path)] == [0, 0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1\t2\nA\t1\t2\n", "announces"),
        ("1\t1\nA\t1\nB\t1\tC\t2\n", ":2: expected 'name n1 n2'"),
        ("1\t1\nA\t1\t2\nB\tx\tC\t2\n", ":3: image number 'x'"),
        ("ten\n", "header"),
    ],
)
def test_lfw_pairs_errors_name_the_line(tmp_path, text, message):
    (tmp_path / "p.txt").write_text(text)
    with pytest.raises(InvalidRequest, match=message):
        read_lfw_pairs(tmp_path / "p.txt", tmp_path)


def test_csv_pairs(tmp_path):
    (tmp_path / "p.csv").write_text("image_a,image_b,same,note\na/1.jpg,a/2.jpg,1,x\na/1.jpg,b/1.jpg,false,\n"
                                    "a/2.jpg,/abs/b.jpg,Same,\n")
    pairs = read_pairs(tmp_path / "p.csv")
    assert pairs == [
        ImagePair(tmp_path / "a/1.jpg", tmp_path / "a/2.jpg", True),
        ImagePair(tmp_path / "a/1.jpg", tmp_path / "b/1.jpg", False),
        ImagePair(tmp_path / "a/2.jpg", tmp_path / "/abs/b.jpg", True),
    ]
    write_csv_pairs(tmp_path / "q.csv", pairs, base_dir=tmp_path)
    assert read_csv_pairs(tmp_path / "q.csv") == pairs
    (tmp_path / "bad.csv").write_text("a,b,same\nx,y,1\n")
    with pytest.raises(InvalidRequest, match="image_a"):
        read_pairs(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("image_a,image_b,same\nx,y,maybe\n")
    with pytest.raises(InvalidRequest, match=":2: 'same'"):
        read_pairs(tmp_path / "bad2.csv")


def test_all_pairs_counts_match_the_model_card():
    pairs = all_pairs(identity_folders(FACES_DIR))
    assert (sum(p.same for p in pairs), sum(not p.same for p in pairs)) == (165, 2916)  # card.json's counts


# ------------------------------------------------------------------------------ verification metrics
def test_auc_and_roc_equal_sklearn():
    d, s = synthetic()
    r = verification_report(d, s)
    assert r.auc == pytest.approx(roc_auc_score(s, -d), abs=1e-12)
    fpr, tpr, _ = roc_curve(s, -d)
    assert np.trapezoid(tpr, fpr) == pytest.approx(r.auc, abs=1e-12)
    assert np.trapezoid(r.roc.tar, r.roc.far) == pytest.approx(r.auc, abs=1e-12)


def test_eer_brute_force():
    d, s = synthetic()
    eer, tau = equal_error_rate(roc(d, s))
    # Independent: sweep every observed tau; EER lies between the closest FAR and FRR on either side.
    taus = np.sort(d)
    far = np.array([(d[~s] <= t).mean() for t in taus])
    frr = np.array([(d[s] > t).mean() for t in taus])
    i = int(np.argmin(np.abs(far - frr)))
    assert abs(eer - (far[i] + frr[i]) / 2) <= 2.0 / s.sum()
    assert abs(tau - taus[i]) < 0.02
    # At the returned tau, FAR and FRR agree to within one pair of each class.
    assert abs((d[~s] <= tau).mean() - (d[s] > tau).mean()) <= 1.0 / s.sum() + 1.0 / (~s).sum()


def test_tar_at_far_equals_sklearn_roc():
    d, s = synthetic()
    fpr, tpr, _ = roc_curve(s, -d, drop_intermediate=False)
    for target in (1e-1, 1e-2, 1e-3):
        op = tar_at_far(d, s, target)
        assert op.tar == pytest.approx(tpr[fpr <= target].max(), abs=1e-12)
        assert op.far <= target
        assert op.far == pytest.approx((d[~s] <= op.tau).mean()) and op.tar == pytest.approx((d[s] <= op.tau).mean())
        assert (op.n_same, op.n_different) == (400, 4000)


def test_tar_at_far_refuses_too_few_pairs():
    d, s = synthetic(n_same=50, n_diff=500)
    ok, missing = tar_at_far(d, s, 1e-2), tar_at_far(d, s, 1e-3)
    assert ok.enough_pairs and ok.tar is not None
    assert not missing.enough_pairs and missing.tar is None and missing.tau is None
    assert "not enough pairs" in missing.note and "1000" in missing.note and "500" in missing.note


def _best_tau_brute(d: np.ndarray, s: np.ndarray) -> float:
    """The lowest observed tau of best accuracy."""
    cands = np.unique(d)
    acc = [((d <= t) == s).mean() for t in cands]
    return float(cands[int(np.argmax(acc))])


def _mid_best_tau_brute(d: np.ndarray, s: np.ndarray) -> float:
    """The middle of the first run of observed taus with best accuracy, up to the next observed distance."""
    cands = np.unique(d)
    acc = np.array([((d <= t) == s).mean() for t in cands])
    i = j = int(np.argmax(acc))
    while j + 1 < len(cands) and acc[j + 1] == acc[i]:
        j += 1
    return float((cands[i] + cands[j + 1]) / 2) if j + 1 < len(cands) else float(cands[j])


def test_ten_fold_accuracy_lfw_protocol_brute_force():
    d, s = synthetic(n_same=300, n_diff=300, seed=4)
    folds = np.arange(600) % 10
    cv = cross_validated_accuracy(d, s, folds)
    assert cv.folds_from_file and len(cv.fold_accuracy) == 10
    expected = []
    for f in range(10):
        tr, te = folds != f, folds == f
        tau = _best_tau_brute(d[tr], s[tr])  # the lowest best tau; ours is mid-interval: same train accuracy
        assert ((d[tr] <= cv.fold_tau[f]) == s[tr]).mean() == pytest.approx(((d[tr] <= tau) == s[tr]).mean())
        expected.append(((d[te] <= cv.fold_tau[f]) == s[te]).mean())
    assert cv.mean == pytest.approx(np.mean(expected)) and cv.std == pytest.approx(np.std(expected))
    assert 0.85 < cv.mean < 0.99  # overlapping distributions: neither trivial nor broken


def test_separable_pairs_give_zero_eer_and_mid_interval_tau():
    d = np.array([0.2, 0.5, 0.9, 1.1, 1.4, 1.5])
    s = np.array([True, True, True, False, False, False])
    r = verification_report(d, s, fars=(0.5,))
    assert (r.auc, r.eer, r.tau_eer) == (1.0, 0.0, pytest.approx(1.0))
    assert (r.best.accuracy, r.best.low, r.best.high, r.best.tau) == (1.0, 0.9, 1.1, pytest.approx(1.0))


def test_metrics_reject_one_class():
    with pytest.raises(InvalidRequest, match="both"):
        verification_report([0.1, 0.2], [True, True])


# ------------------------------------------------------------------------- open-set identification
def test_identification_metrics_brute_force():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(12, 16))
    def draw(person: int) -> np.ndarray:
        v = centres[person] + rng.normal(scale=0.9, size=16)
        return v / np.linalg.norm(v)
    gallery_ids = [p for p in range(8) for _ in range(2)]
    gallery = np.stack([draw(p) for p in gallery_ids])
    probe_ids = [p for p in range(12) for _ in range(10)]  # people 8..11 are strangers
    probes = np.stack([draw(p) for p in probe_ids])
    scores = score_probes(gallery, [str(p) for p in gallery_ids], probes, [str(p) for p in probe_ids])
    tau = 1.0
    r = identification_report(scores, tau, fars=(0.1, 0.01), ranks=(1, 3))

    best_d, best_id, ranks = [], [], []
    for q, pid in zip(probes, probe_ids):
        per = {g: min(np.linalg.norm(q - gallery[j]) for j in range(len(gallery)) if gallery_ids[j] == g)
               for g in set(gallery_ids)}
        order = sorted(per, key=per.get)
        best_d.append(per[order[0]])
        best_id.append(order[0])
        ranks.append(order.index(pid) + 1 if pid in per else 0)
    best_d, best_id, ranks = np.array(best_d), np.array(best_id), np.array(ranks)
    known = np.array(probe_ids) < 8
    correct = best_id == np.array(probe_ids)
    assert r.n_known == 80 and r.n_unknown == 40
    assert r.rank_accuracy[1] == pytest.approx(correct[known].mean())
    assert r.rank_accuracy[3] == pytest.approx((ranks[known] <= 3).mean())
    assert 0.3 < r.rank_accuracy[1] < 1.0  # noisy enough to be a real check
    assert r.unknown_named_rate == pytest.approx((best_d[~known] <= tau).mean())
    assert r.known_correct_rate == pytest.approx(((best_d <= tau) & correct)[known].mean())
    assert r.known_wrong_rate == pytest.approx(((best_d <= tau) & ~correct)[known].mean())
    assert r.known_rejected_rate == pytest.approx((best_d[known] > tau).mean())
    dir10, dir1 = r.dir_at_far
    # DIR at FAR 0.1 with 40 strangers: at most 4 may be named; the 5th nearest stranger bounds tau.
    fifth = np.sort(best_d[~known])[4]
    assert (best_d[~known] <= dir10.tau).sum() <= 4 and dir10.tau < fifth
    assert dir10.dir == pytest.approx(((best_d < fifth) & correct)[known].mean())
    assert dir1.tau is None and "not enough strangers" in dir1.note and "100" in dir1.note


def test_open_set_splits_rotate_every_person_as_stranger_once():
    people = identity_folders(FACES_DIR)
    splits = open_set_splits(people, n_folds=4, gallery_per_identity=2, seed=0)
    strangers = [p for sp in splits for p in {n for n, _ in sp.unknown_probes}]
    assert sorted(strangers) == sorted(people)
    for sp in splits:
        enrolled = {n for n, _ in sp.gallery}
        assert enrolled.isdisjoint(n for n, _ in sp.unknown_probes)
        assert {n for n, _ in sp.known_probes} <= enrolled
        assert not {p for _, p in sp.gallery} & {p for _, p in sp.known_probes}
    assert sum(len(sp.unknown_probes) for sp in splits) == 79


# ------------------------------------------------------------------------------------- real photos
@pytest.mark.slow
def test_generated_pairs_file_on_real_photos_matches_independent_numbers(tmp_path):
    from face_crops import face_crops

    fc = face_crops()
    pairs = lfw_style_pairs(identity_folders(FACES_DIR), n_folds=10, seed=11)
    write_lfw_pairs(tmp_path / "pairs.txt", pairs)
    read_back = read_pairs(tmp_path / "pairs.txt", FACES_DIR, pattern="{name}/{num:02d}.jpg")
    # One photo "fails detection": its pairs must be reported as skipped, not silently dropped or scored.
    from faceid.indexer.evaluation import DetectionFailure

    lost = fc.paths[0]
    keep = [i for i, p in enumerate(fc.paths) if p != lost]
    images = EmbeddedImages("facenet-20170512-128d", tuple(fc.paths[i] for i in keep), fc.embeddings[keep],
                            (DetectionFailure(lost, "no face found"),))
    ev = evaluate_pairs(read_back, images)

    emb = {p: e.astype(np.float64) for p, e in zip(fc.paths, fc.embeddings)}
    used = [p for p in pairs if lost not in (p.a, p.b)]
    assert len(ev.skipped) == len(pairs) - len(used) > 0
    d = np.array([np.linalg.norm(emb[p.a] - emb[p.b]) for p in used])
    s = np.array([p.same for p in used])
    folds = np.array([p.fold for p in used])
    r = ev.report
    assert r.auc == pytest.approx(roc_auc_score(s, -d), abs=1e-9)
    assert (r.n_same, r.n_different) == (s.sum(), (~s).sum())
    fold_acc = []
    for f in range(10):
        tr, te = folds != f, folds == f
        fold_acc.append(((d[te] <= _mid_best_tau_brute(d[tr], s[tr])) == s[te]).mean())
    assert r.cv.mean == pytest.approx(np.mean(fold_acc)) and r.cv.folds_from_file
    fpr, tpr, _ = roc_curve(s, -d, drop_intermediate=False)
    op = r.tar_at_far[0]
    assert op.tar == pytest.approx(tpr[fpr <= 0.1].max())
    assert not r.tar_at_far[2].enough_pairs  # 150-odd different pairs cannot measure FAR 1e-3
    text = format_pairs_evaluation(ev)
    assert "not enough pairs" in text and str(lost) in text and "skipped" in text
    json.dumps(to_jsonable(ev.report))
    png = plot_roc({"facenet": r}, tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_open_set_identification_on_real_photos():
    from face_crops import face_crops

    fc = face_crops()
    images = EmbeddedImages("facenet-20170512-128d", fc.paths, fc.embeddings)
    splits = open_set_splits(identity_folders(FACES_DIR), n_folds=4, gallery_per_identity=2, seed=0)
    ev = evaluate_identification(splits, images, tau=1.02, fars=(0.1, 0.01))
    r = ev.report
    assert r.n_unknown == 79 and r.n_known == sum(len(sp.known_probes) for sp in splits)
    # Independent re-computation of rank-1 and the stranger rate for split 0.
    sp = splits[0]
    vec = dict(zip(fc.paths, fc.embeddings.astype(np.float64)))
    def nearest(p):
        return min(sp.gallery, key=lambda g: np.linalg.norm(vec[p] - vec[g[1]]))
    ok = [nearest(p)[0] == n for n, p in sp.known_probes]
    named = [np.linalg.norm(vec[p] - vec[nearest(p)[1]]) <= 1.02 for _, p in sp.unknown_probes]
    n0k, n0u = len(sp.known_probes), len(sp.unknown_probes)
    assert np.mean(ok) == pytest.approx(ev.scores.best_correct[:n0k].mean())
    assert np.mean(named) == pytest.approx((ev.scores.best_distance[n0k : n0k + n0u] <= 1.02).mean())
    assert r.rank_accuracy[1] >= 0.95 and r.unknown_named_rate <= 0.05  # the model card's data are easy
    assert "strangers named" in format_identification_evaluation(ev)


@pytest.mark.slow
def test_faceid_eval_pairs_csv_reports_failures_and_matches_reference_embeddings(tmp_path):
    """`faceid eval pairs` end to end on a CSV: service detector + embedder, a photo without a face and a missing
    file reported (their pairs skipped), distances equal to straight facenet-pytorch's, a ROC PNG written."""
    from conftest import MODELS_DIR, NO_FACE_DIR
    from face_crops import face_crops

    from faceid.indexer.cli_tools import eval_pairs

    fc = face_crops()
    people = identity_folders(FACES_DIR)
    chosen = {n: people[n][:3] for n in sorted(people)[:5]}
    pairs = all_pairs(chosen)
    no_face, missing = NO_FACE_DIR / "coffee.jpg", tmp_path / "gone.jpg"
    bad = [ImagePair(chosen[sorted(chosen)[0]][0], no_face, False), ImagePair(missing, no_face, False)]
    write_csv_pairs(tmp_path / "pairs.csv", pairs + bad)
    ev = eval_pairs(tmp_path / "pairs.csv", model_dir=MODELS_DIR, device="cpu", roc_png=tmp_path / "roc.png",
                    progress=False)
    assert {f.path for f in ev.failures} == {no_face, missing}
    assert "not found" in next(f.reason for f in ev.failures if f.path == missing)
    assert "no face" in next(f.reason for f in ev.failures if f.path == no_face)
    assert set(ev.skipped) == set(bad) and ev.n_pairs == len(pairs) + 2
    ref = dict(zip(fc.paths, fc.embeddings.astype(np.float64)))
    want = np.array([np.linalg.norm(ref[p.a] - ref[p.b]) for p in pairs])
    assert ev.distances.distances == pytest.approx(want, abs=1e-4)
    s = np.array([p.same for p in pairs])
    assert ev.report.auc == pytest.approx(roc_auc_score(s, -want), abs=1e-9)
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
