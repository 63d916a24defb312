"""The accuracy commands as plain functions: `faceid eval pairs|identify`, `faceid calibrate`, `faceid train
triplet|siamese`, `faceid reindex`. The CLI parses flags, calls one of these (imported lazily: they pull in torch), and prints
the returned dataclass (`evaluation.format_*` for text, `evaluation.to_jsonable` for --json).

Every function embeds the photos itself with the service's detector and embedder for the named model, so the
numbers are those of the service; photos that fail detection are listed in the result, never silently dropped.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid.indexer.calibration import Calibration, calibrate
from faceid.indexer.errors import InvalidRequest
from faceid.indexer.evaluation import (
    DEFAULT_FARS,
    LFW_PATTERN,
    DetectionFailure,
    IdentificationEvaluation,
    ImagePair,
    PairsEvaluation,
    all_pairs,
    best_accuracy,
    evaluate_identification,
    evaluate_pairs,
    identity_folders,
    open_set_splits,
    plot_roc,
    read_pairs,
)
from faceid.indexer.evaluation.files import file_embedder
from faceid.indexer.models.spec import DEFAULT_MODEL
from faceid.indexer.reindex import ReindexResult
from faceid.indexer.training.siamese import PairFeature, SiameseVerifier
from faceid.indexer.training.triplet import HoldOut, TripletConfig, TripletTrainingResult


def load_pairs(pairs: Path, image_dir: Path | None = None, pattern: str = LFW_PATTERN) -> list[ImagePair]:
    """A pairs file (LFW pairs.txt or CSV image_a,image_b,same) or, for a folder of per-person folders, all pairs."""
    pairs = Path(pairs)
    if pairs.is_dir():
        return all_pairs(identity_folders(pairs))
    if not pairs.is_file():
        raise InvalidRequest(f"{pairs} is neither a pairs file nor a folder of per-person folders")
    return read_pairs(pairs, image_dir, pattern)


def eval_pairs(
    pairs: Path,
    *,
    image_dir: Path | None = None,
    pattern: str = LFW_PATTERN,
    model: str = DEFAULT_MODEL,
    model_dir: Path | None = None,
    device: str = "auto",
    fars: Sequence[float] = DEFAULT_FARS,
    roc_png: Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> PairsEvaluation:
    """`faceid eval pairs`: ROC AUC, EER, 10-fold accuracy, TAR at FAR (+ a ROC PNG when `roc_png` is given)."""
    pair_list = load_pairs(pairs, image_dir, pattern)
    images = file_embedder(model, device, model_dir).embed_files([p for q in pair_list for p in (q.a, q.b)], progress)
    ev = evaluate_pairs(pair_list, images, fars, seed)
    if roc_png is not None:
        plot_roc({model: ev.report}, roc_png, title=f"ROC of {model} on {Path(pairs).name}")
    return ev


def eval_identify(
    folder: Path,
    *,
    model: str = DEFAULT_MODEL,
    model_dir: Path | None = None,
    device: str = "auto",
    tau: float | None = None,
    database_url: str | None = None,
    stranger_folds: int = 4,
    gallery_per_identity: int = 2,
    fars: Sequence[float] = (1e-1, 1e-2),
    seed: int = 0,
    progress: bool = True,
) -> IdentificationEvaluation:
    """`faceid eval identify`: open-set 1:K on a folder of per-person folders.

    People are split into `stranger_folds` groups; each group in turn is never enrolled, the others enrol
    `gallery_per_identity` photos each and probe with the rest. tau: given, else the model's calibration stored in
    `database_url`, else the model card's.
    """
    people = identity_folders(folder)
    splits = open_set_splits(people, stranger_folds, gallery_per_identity, seed)
    embedder = file_embedder(model, device, model_dir)
    images = embedder.embed_files([p for files in people.values() for p in files], progress)
    if tau is None:
        tau = _stored_tau(database_url, embedder.spec.name) or embedder.spec.default_threshold
    return evaluate_identification(splits, images, tau, fars)


def _stored_tau(database_url: str | None, model_id: str) -> float | None:
    if database_url is None:
        return None
    from faceid.indexer.store import create_store

    store = create_store(database_url)
    try:
        row = store.get_calibration(model_id)
        return None if row is None else float(row.threshold)
    finally:
        store.close()


@dataclass(frozen=True)
class CalibrationOutcome:
    calibration: Calibration
    evaluation: PairsEvaluation  # the calibration pairs' metrics (and detection failures)
    stored_in: str | None  # the database URL the calibration was written to, if any


def calibrate_model(
    pairs: Path,
    *,
    target_far: float = 1e-2,
    model: str = DEFAULT_MODEL,
    model_dir: Path | None = None,
    device: str = "auto",
    image_dir: Path | None = None,
    pattern: str = LFW_PATTERN,
    database_url: str | None = None,
    progress: bool = True,
) -> CalibrationOutcome:
    """`faceid calibrate`: tau at `target_far` and P(same | distance) from labeled pairs (a pairs file, or all pairs
    of a folder of per-person folders); stored as the model's calibration in `database_url` when given, which
    Verify and Identify then use by default (a request's own threshold still wins)."""
    ev = eval_pairs(pairs, image_dir=image_dir, pattern=pattern, model=model, model_dir=model_dir, device=device,
                    fars=(target_far,), progress=progress)
    cal = calibrate(ev.distances.distances, ev.distances.same, target_far, ev.model_id)
    if database_url is not None:
        from faceid.indexer.store import create_store

        store = create_store(database_url)
        try:
            store.set_calibration(
                model_id=cal.model_id,
                threshold=cal.tau,
                source=(f"faceid calibrate: FAR {cal.far:.4g} (target {target_far:g}), TAR {cal.tar:.4f} on "
                        f"{cal.n_same} same / {cal.n_different} different pairs, {cal.created_at}"),
                logistic_a=cal.intercept,  # the engine computes P = sigmoid(a + b·d)
                logistic_b=cal.slope,
                actor="faceid calibrate",
            )
        finally:
            store.close()
    return CalibrationOutcome(cal, ev, database_url)


@dataclass(frozen=True)
class TripletTrainOutcome:
    model_id: str
    folder: Path  # where the new model was written
    result: TripletTrainingResult
    tau: float  # the new model's default threshold (middle of its best-accuracy interval on all pairs)
    failures: tuple[DetectionFailure, ...]


def train_triplet_model(
    folder: Path,
    *,
    new_model_id: str,
    base_model: str = DEFAULT_MODEL,
    model_dir: Path | None = None,
    out_dir: Path | None = None,
    trainable: str = "head",
    config: TripletConfig = TripletConfig(),
    holdout_by: HoldOut = "images",
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> TripletTrainOutcome:
    """`faceid train triplet`: fine-tune `base_model`'s head (or head + last block) on a folder of per-person folders
    and save it as `new_model_id` in `out_dir` (default: the user model cache, where the server finds it)."""
    import torch

    from faceid.indexer.embedding import standardize
    from faceid.indexer.models import model_cache_dir
    from faceid.indexer.training.export import check_model_id, save_embedding_model
    from faceid.indexer.training.network import split_network, trunk_features
    from faceid.indexer.training.triplet import embed_features, train_triplet

    check_model_id(new_model_id)
    people = identity_folders(folder)
    embedder = file_embedder(base_model, device, model_dir)
    cropped = embedder.crop_files([p for files in people.values() for p in files], progress)
    names = sorted(people)
    labels = np.array([names.index(Path(p).parent.name) for p in cropped.images.paths], dtype=np.int64)

    network = copy.deepcopy(embedder.embedder.network)
    trunk, tail = split_network(network, trainable)  # type: ignore[arg-type]
    x = standardize(torch.from_numpy(cropped.crops).float(), embedder.spec.preprocessing)
    feats = trunk_features(trunk, x)
    flipped = trunk_features(trunk, x.flip(-1)) if config.flip else None
    result = train_triplet(tail, feats, labels, config, flipped=flipped, holdout_by=holdout_by, progress=progress)

    emb = embed_features(tail, feats).double().numpy()
    i, j = np.triu_indices(len(emb), 1)
    tau = best_accuracy(np.linalg.norm(emb[i] - emb[j], axis=1), labels[i] == labels[j]).tau
    training = {
        **result.to_dict(),
        "trainable": trainable,
        "holdout_by": holdout_by,
        "data": {"people": len(names), "photos": len(labels), "detection_failures": len(cropped.images.failures)},
    }
    path = save_embedding_model(
        network, embedder.spec, new_model_id, Path(out_dir) if out_dir is not None else model_cache_dir(),
        default_threshold=tau,
        threshold_source=(f"middle of the best-accuracy interval on all {len(i)} pairs of the training folder "
                          "(faceid train triplet); calibrate on your own pairs before relying on it"),
        training=training, overwrite=overwrite,
    )
    return TripletTrainOutcome(new_model_id, path, result, tau, cropped.images.failures)


@dataclass(frozen=True)
class SiameseTrainOutcome:
    model_id: str
    folder: Path
    verifier: SiameseVerifier
    n_train_pairs: int
    n_val_pairs: int
    val_auc_head: float | None  # held-out AUC of the head's probability
    val_auc_distance: float | None  # held-out AUC of the plain L2 distance, for comparison
    failures: tuple[DetectionFailure, ...]


def train_siamese_head(
    folder: Path,
    *,
    head_id: str,
    base_model: str = DEFAULT_MODEL,
    kind: PairFeature = "l1",
    c: float = 1.0,
    holdout_by: HoldOut = "identities",
    model_dir: Path | None = None,
    out_dir: Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> SiameseTrainOutcome:
    """`faceid train siamese`: fit σ(Σ w_k φ_k + b) on pairs of the training split, report held-out AUC against the
    plain distance's, and save the head as `head_id` (it names its base model)."""
    from faceid.indexer.evaluation import auc
    from faceid.indexer.models import model_cache_dir
    from faceid.indexer.training.export import check_model_id, save_siamese_head
    from faceid.indexer.training.siamese import fit_siamese
    from faceid.indexer.training.triplet import holdout_split, validation_pairs

    check_model_id(head_id)
    people = identity_folders(folder)
    embedder = file_embedder(base_model, device, model_dir)
    images = embedder.embed_files([p for files in people.values() for p in files], progress)
    names = sorted(people)
    labels = np.array([names.index(Path(p).parent.name) for p in images.paths], dtype=np.int64)
    emb = images.vectors.astype(np.float64)
    train, val = holdout_split(labels, by=holdout_by, seed=seed)
    ti, tj = (train[k] for k in np.triu_indices(len(train), 1))
    head = fit_siamese(emb[ti], emb[tj], labels[ti] == labels[tj], kind, c)
    vi, vj, vs = validation_pairs(labels, val, holdout_by)
    both = bool(vs.any() and (~vs).any())
    val_head = auc(-head.probability(emb[vi], emb[vj]), vs) if both else None
    val_dist = auc(np.linalg.norm(emb[vi] - emb[vj], axis=1), vs) if both else None
    training = {"pairs_train": int(len(ti)), "pairs_val": int(len(vi)), "holdout_by": holdout_by, "C": c,
                "val_auc_head": val_head, "val_auc_distance": val_dist, "people": len(names), "photos": len(labels)}
    path = save_siamese_head(head, embedder.spec.name, head_id,
                             Path(out_dir) if out_dir is not None else model_cache_dir(),
                             training=training, overwrite=overwrite)
    return SiameseTrainOutcome(head_id, path, head, len(ti), len(vi), val_head, val_dist, images.failures)


def reindex_database(
    database_url: str,
    *,
    model: str,
    source_model: str | None = None,
    originals: Path | None = None,
    drop_unembeddable: bool = False,
    model_dir: Path | None = None,
    device: str = "auto",
    thumbnail_size: int = 96,
    progress: bool = True,
) -> ReindexResult:
    """`faceid reindex --model ID`: re-embed the gallery in `database_url` with `model` (registered or trained)
    and switch it to that model id in one transaction (see faceid.indexer.reindex; run with the server stopped)."""
    from faceid.indexer.models import load_embedding_network
    from faceid.indexer.models.trained import resolve_model
    from faceid.indexer.reindex import choose_source_model, reindex_gallery, source_spec_of
    from faceid.indexer.runtime import resolve_device
    from faceid.indexer.store import create_store

    store = create_store(database_url)
    try:
        spec, folder = resolve_model(model, model_dir=model_dir)
        source = choose_source_model(store.face_counts_by_model(), spec.name, source_model)  # fail fast, before loading
        dev = resolve_device(device)
        network = load_embedding_network(spec, folder, dev, verify=False)  # resolve_model verified the files
        return reindex_gallery(
            store, spec, network, device=dev, source_model=source, source_spec=source_spec_of(source, model_dir),
            originals=originals, drop_unembeddable=drop_unembeddable, thumbnail_size=thumbnail_size,
            progress=progress,
        )
    finally:
        store.close()
