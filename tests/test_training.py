"""Training: triplet loss and miners against brute force, P×K batches, hold-out split, a short fine-tune on
the real photos, the Siamese head, and saving trained models as new model ids."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from faceid.indexer.errors import AlreadyExists, ChecksumMismatch, InvalidRequest
from faceid.indexer.evaluation import auc
from faceid.indexer.training import (
    PKBatchSampler,
    TripletConfig,
    batch_triplet_loss,
    fit_siamese,
    holdout_split,
    mean_triplet_loss,
    mine_batch_all,
    mine_hard,
    mine_semi_hard,
    pair_features,
    split_network,
    train_triplet,
    triplet_loss,
    trunk_features,
    validation_pairs,
)


# ------------------------------------------------------------------------- brute-force references
def _sq(e: np.ndarray, i: int, j: int) -> float:
    return float(((e[i] - e[j]) ** 2).sum())


def _valid(labels, a, p, n) -> bool:
    return a != p and labels[a] == labels[p] and labels[n] != labels[a]


def brute_batch_all(e, labels):
    b = len(labels)
    return [(a, p, n) for a, p, n in itertools.product(range(b), repeat=3) if _valid(labels, a, p, n)]


def brute_hard(e, labels):
    out = []
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            out.append((a, max(pos, key=lambda p: _sq(e, a, p)), min(neg, key=lambda n: _sq(e, a, n))))
    return out


def brute_semi_hard(e, labels):
    out = []
    for a, p in itertools.permutations(range(len(labels)), 2):
        if labels[a] != labels[p]:
            continue
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not neg:
            continue
        farther = [n for n in neg if _sq(e, a, n) > _sq(e, a, p)]
        n = min(farther, key=lambda n: _sq(e, a, n)) if farther else max(neg, key=lambda n: _sq(e, a, n))
        out.append((a, p, n))
    return out


def brute_loss(e, triplets, margin, mining):
    losses = [max(_sq(e, a, p) - _sq(e, a, n) + margin, 0.0) for a, p, n in triplets]
    if not losses:
        return 0.0
    if mining == "batch_all":
        active = [x for x in losses if x > 0]
        return sum(active) / max(len(active), 1)
    return sum(losses) / len(losses)


BRUTE = {"batch_all": brute_batch_all, "hard": brute_hard, "semi_hard": brute_semi_hard}
MINE = {"batch_all": mine_batch_all, "hard": mine_hard, "semi_hard": mine_semi_hard}


def random_batch(seed: int, b: int, d: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(b, d))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return torch.from_numpy(e), torch.from_numpy(rng.integers(0, classes, size=b))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(2, 14), d=st.integers(2, 8), classes=st.integers(1, 5),
       margin=st.floats(0.05, 2.0), mining=st.sampled_from(["batch_all", "hard", "semi_hard"]))
def test_miners_and_loss_match_brute_force(seed, b, d, classes, margin, mining):
    e, labels = random_batch(seed, b, d, classes)
    lab = labels.tolist()
    t = MINE[mining](e, labels)
    got = sorted(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()))
    want = sorted(BRUTE[mining](e.numpy(), lab))
    assert got == want
    result = batch_triplet_loss(e.clone().requires_grad_(True), labels, margin, mining)
    assert float(result.loss.detach()) == pytest.approx(brute_loss(e.numpy(), want, margin, mining), rel=1e-9, abs=1e-12)
    assert result.n_triplets == len(want)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(2, 12), classes=st.integers(1, 4), margin=st.floats(0.0, 2.0))
def test_mean_triplet_loss_is_mean_over_all_valid_triplets(seed, b, classes, margin):
    e, labels = random_batch(seed, b, 4, classes)
    triplets = brute_batch_all(e.numpy(), labels.tolist())
    want = (np.mean([max(_sq(e.numpy(), a, p) - _sq(e.numpy(), a, n) + margin, 0.0) for a, p, n in triplets])
            if triplets else 0.0)
    assert mean_triplet_loss(e, labels, margin, chunk=3) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_triplet_loss_formula_and_gradient():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    n = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = triplet_loss(a, p, n, margin=0.2)
    assert loss.tolist() == pytest.approx([2.0 - 0.0 + 0.2, 0.0])  # ‖a−p‖² − ‖a−n‖² + α, clamped at 0
    loss.sum().backward()
    assert n.grad[1].abs().sum() == 0  # a satisfied triplet sends no gradient


def test_batch_without_triplets_gives_zero_loss_with_graph():
    e = torch.nn.functional.normalize(torch.randn(4, 3), dim=1).requires_grad_(True)
    out = batch_triplet_loss(e, torch.tensor([0, 1, 2, 3]))
    assert out.n_triplets == 0 and float(out.loss.detach()) == 0.0
    out.loss.backward()  # must not raise: a training loop can always step


# ------------------------------------------------------------------------------- batches and splits
def test_pk_sampler():
    labels = [0] * 6 + [1] * 2 + [2] * 5 + [3] * 1 + [4] * 4
    sampler = PKBatchSampler(labels, p=3, k=4, n_batches=50, seed=1)
    seen = set()
    for batch in sampler:
        assert len(batch) == len(set(batch))
        people = [labels[i] for i in batch]
        assert len(set(people)) == 3 and 3 not in people  # the lone photo never comes: it has no positive
        assert all(people.count(x) == min(4, labels.count(x)) for x in set(people))
        seen.update(batch)
    assert seen == {i for i, x in enumerate(labels) if x != 3}
    again = PKBatchSampler(labels, p=3, k=4, n_batches=50, seed=1)
    assert list(again) == list(sampler)
    again.set_epoch(1)
    assert list(again) != list(sampler)
    assert len(PKBatchSampler(labels, p=2, k=2)) == 5  # ceil(17 usable photos / (2 × 2))
    with pytest.raises(InvalidRequest, match="at least 2 people"):
        PKBatchSampler([0, 0, 1], p=2, k=2)


def test_holdout_split_and_validation_pairs():
    labels = np.repeat(np.arange(6), [3, 4, 5, 6, 2, 5])
    train, val = holdout_split(labels, 0.25, "images", seed=0)
    assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(labels)
    for person in range(6):
        assert (labels[train] == person).sum() >= 2
    assert (labels[val] == 4).sum() == 0  # two photos: both needed for training
    i, j, same = validation_pairs(labels, val, "images")
    assert all((a in val) or (b in val) for a, b in zip(i, j)) and same.any() and (~same).any()
    train, val = holdout_split(labels, 0.34, "identities", seed=0)
    assert set(labels[train]).isdisjoint(labels[val]) and len(set(labels[val])) == 2
    i, j, same = validation_pairs(labels, val, "identities")
    assert set(i) | set(j) <= set(val.tolist())


# ------------------------------------------------------------------------------------- Siamese head
def test_chi2_feature_handles_negative_components():
    a = np.array([[-1.0, 0.0, 0.6, -0.8]])
    b = np.array([[-1.0, 0.0, -0.6, 0.8]])
    phi = pair_features(a, b, "chi2")
    assert np.isfinite(phi).all() and (phi >= 0).all()
    # In f: (f_i − f_j)² / (2·(2 + f_i + f_j) + 4·eps)
    assert phi[0, 2] == pytest.approx(1.2**2 / (2 * 2.0 + 4e-6))
    assert phi[0, 0] == 0.0  # both −1: 0/eps, not 0/0
    assert pair_features(a, -a, "chi2")[0, 2] > 0  # f and −f differ (|f| would call them equal)
    assert pair_features(a, b, "l1").tolist() == [[0.0, 0.0, 1.2, pytest.approx(1.6)]]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["l1", "chi2"])
def test_siamese_head_on_real_embeddings(kind):
    from face_crops import face_crops

    fc = face_crops()
    e, labels = fc.embeddings.astype(np.float64), fc.labels
    train, val = holdout_split(labels, by="identities", seed=0)
    i, j = (train[x] for x in np.triu_indices(len(train), 1))
    head = fit_siamese(e[i], e[j], labels[i] == labels[j], kind)
    vi, vj, vs = validation_pairs(labels, val, "identities")
    p = head.probability(e[vi], e[vj])
    manual = 1.0 / (1.0 + np.exp(-(pair_features(e[vi], e[vj], kind) @ head.weight + head.bias)))
    assert p == pytest.approx(manual, rel=1e-9)
    assert auc(-p, vs) >= 0.99  # held-out people: the head generalises (distance alone gives 1.0 here)
    assert p[vs].mean() > 0.5 > p[~vs].mean()


# ---------------------------------------------------------------------------- fine-tuning for real
@pytest.fixture(scope="module")
def head_features():
    from face_crops import face_crops, network

    fc = face_crops()
    trunk, _ = split_network(copy.deepcopy(network()), "head")
    return fc, trunk_features(trunk, fc.crops), trunk_features(trunk, fc.crops.flip(-1))


@pytest.mark.slow
def test_triplet_fine_tune_lowers_loss_and_keeps_held_out_auc(head_features):
    from face_crops import network

    fc, feats, flipped = head_features
    net = copy.deepcopy(network())
    trunk_before = net.conv2d_1a.conv.weight.clone()
    _, tail = split_network(net, "head")
    # On these easy photos same-person squared distances are ~0.3 and different ones ~1.7: FaceNet's α = 0.2
    # leaves no active triplet, α = 0.8 gives the loss something to do.
    config = TripletConfig(epochs=5, p=8, k=4, margin=0.8, mining="semi_hard", lr=1e-3, restore_best=False)
    seen = []
    result = train_triplet(tail, feats, fc.labels, config, flipped=flipped, progress=False, on_epoch=seen.append)
    start, end = result.history[0], result.history[-1]
    assert [h.epoch for h in result.history] == list(range(6)) and seen == result.history[1:]
    assert start.train_objective > 0 and end.train_objective < 0.5 * start.train_objective
    assert end.val_auc >= start.val_auc
    assert torch.equal(net.conv2d_1a.conv.weight, trunk_before)  # only the tail trained
    assert not torch.equal(net.last_linear.weight, network().last_linear.weight)
    # The tail is the network's own: the full model now embeds as the tail does.
    with torch.inference_mode():
        full = net(fc.crops[:8])
    assert torch.allclose(full, tail(feats[:8]), atol=1e-5)


@pytest.mark.slow
def test_last_block_fine_tune_trains_block8_and_head_only():
    """`--trainable last_block`: block8 trains with the head on cached (1792, 3, 3) maps; nothing before it moves,
    and the full network then embeds as the tail does."""
    from face_crops import face_crops, network

    fc = face_crops()
    net = copy.deepcopy(network())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trunk, tail = split_network(net, "last_block")
    feats = trunk_features(trunk, fc.crops)
    assert feats.shape[1:] == (1792, 3, 3)
    config = TripletConfig(epochs=3, p=8, k=4, margin=0.8, mining="semi_hard", lr=1e-4, restore_best=False, flip=False)
    result = train_triplet(tail, feats, fc.labels, config, progress=False)
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("block8.") for k in changed) and any(k.startswith("last_linear.") for k in changed)
    assert all(k.startswith(("block8.", "last_linear.", "last_bn.")) for k in changed)
    start, end = result.history[0], result.history[-1]
    assert end.train_objective < 0.5 * start.train_objective and end.val_auc >= start.val_auc
    assert all(h.val_auc is not None for h in result.history)  # held-out AUC every epoch
    with torch.inference_mode():
        assert torch.allclose(net(fc.crops[:8]), tail(feats[:8]), atol=1e-5)


@pytest.mark.slow
def test_save_trained_model_as_new_model_id(head_features, tmp_path):
    from face_crops import MODEL, network

    from faceid.indexer.models import get_model_spec, load_embedding_network, verify_model_files
    from faceid.indexer.training.export import (
        load_siamese_head,
        save_embedding_model,
        save_siamese_head,
        trained_model_spec,
    )

    fc, feats, _ = head_features
    net = copy.deepcopy(network())
    _, tail = split_network(net, "head")
    result = train_triplet(tail, feats, fc.labels, TripletConfig(epochs=1, margin=0.8, lr=1e-3, restore_best=False),
                           progress=False)
    base = get_model_spec(MODEL)
    folder = save_embedding_model(net, base, "faces-ft1", tmp_path, default_threshold=1.05,
                                  threshold_source="test", training=result.to_dict())
    assert sorted(p.name for p in folder.iterdir()) == [
        "SHA256SUMS", "card.json", "model-00001-of-00001.safetensors", "model.safetensors.index.json"]
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    spec = trained_model_spec(folder)
    assert (spec.name, spec.dimension, spec.preprocessing, spec.margin) == ("faces-ft1", 128, "prewhiten", 20)
    verify_model_files(spec, folder)
    loaded = load_embedding_network(spec, folder, "cpu")
    with torch.inference_mode():
        assert torch.allclose(loaded(fc.crops[:4]), net(fc.crops[:4]), atol=1e-6)
    card = json.loads((folder / "card.json").read_text())
    assert card["derived_from"] == MODEL and card["training"]["config"]["margin"] == 0.8
    with pytest.raises(AlreadyExists):
        save_embedding_model(net, base, "faces-ft1", tmp_path, default_threshold=1.0, threshold_source="t", training={})
    with pytest.raises(InvalidRequest, match="model id"):
        save_embedding_model(net, base, "Bad Name", tmp_path, default_threshold=1.0, threshold_source="t", training={})
    weights = folder / "model-00001-of-00001.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        verify_model_files(spec, folder)

    e = fc.embeddings.astype(np.float64)
    i, j = np.triu_indices(len(e), 1)
    head = fit_siamese(e[i], e[j], fc.labels[i] == fc.labels[j], "chi2")
    hfolder = save_siamese_head(head, MODEL, "faces-siamese", tmp_path, training={"pairs": len(i)})
    back, base_id = load_siamese_head(hfolder)
    assert base_id == MODEL and back.kind == "chi2"
    assert back.probability(e[:5], e[5:10]) == pytest.approx(head.probability(e[:5], e[5:10]), rel=1e-12)
    (hfolder / "head.safetensors").write_bytes((hfolder / "head.safetensors").read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumMismatch):
        load_siamese_head(hfolder)


@pytest.mark.slow
def test_faceid_train_commands_register_models_usable_by_eval(tmp_path):
    """`faceid train triplet` then `faceid eval pairs --model NEW`: the saved model is found by id, verified and
    used through the service's pipeline; `faceid train siamese` saves a head that reports held-out AUC."""
    from conftest import FACES_DIR, MODELS_DIR

    from faceid.indexer.cli_tools import eval_pairs, train_siamese_head, train_triplet_model

    people = tmp_path / "people"
    for person in sorted(p.name for p in FACES_DIR.iterdir())[:5]:
        (people / person).mkdir(parents=True)
        for photo in sorted((FACES_DIR / person).glob("*.jpg"))[:3]:
            (people / person / photo.name).symlink_to(photo)
    models = tmp_path / "models"
    out = train_triplet_model(people, new_model_id="mine-v1", model_dir=MODELS_DIR, out_dir=models, device="cpu",
                              config=TripletConfig(epochs=2, p=4, k=2, margin=0.8, lr=1e-3), progress=False)
    assert out.folder == models / "mine-v1" and not out.failures
    assert len(out.result.history) == 3 and 0.5 < out.tau < 1.5
    ev = eval_pairs(people, model="mine-v1", model_dir=models, device="cpu", progress=False)
    sizes = [len(list(d.iterdir())) for d in people.iterdir()]
    assert ev.model_id == "mine-v1" and ev.report.n_same == sum(n * (n - 1) // 2 for n in sizes)
    assert ev.report.auc > 0.99
    head = train_siamese_head(people, head_id="mine-head", kind="chi2", model_dir=MODELS_DIR, out_dir=models,
                              device="cpu", progress=False)
    assert (models / "mine-head" / "head.safetensors").is_file()
    assert head.n_val_pairs > 0 and head.val_auc_head is not None and head.val_auc_head > 0.95
