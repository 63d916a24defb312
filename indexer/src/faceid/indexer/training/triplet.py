"""Fine-tune the tail of an embedding network with triplet loss on P×K batches of cached trunk features."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray

from faceid.indexer.errors import InvalidRequest
from faceid.indexer.evaluation.verification import auc, d_prime
from faceid.indexer.training.network import Tail
from faceid.indexer.training.sampler import PKBatchSampler
from faceid.indexer.training.triplet_loss import Mining, batch_triplet_loss, mean_triplet_loss

HoldOut = Literal["images", "identities"]


@dataclass(frozen=True)
class TripletConfig:
    """Hyper-parameters of `train_triplet` (defaults: FaceNet's margin 0.2, Hermans' P×K batches)."""

    epochs: int = 10
    p: int = 8  # identities per batch
    k: int = 4  # images per identity
    margin: float = 0.2  # alpha, on squared L2 distances of unit vectors (range 0..4)
    mining: Mining = "semi_hard"
    lr: float = 1e-4
    weight_decay: float = 0.0
    batches_per_epoch: int | None = None  # default: one pass over the training images
    flip: bool = True  # use the mirrored crop's features at random (when given)
    restore_best: bool = True  # keep the epoch with the best held-out AUC, then d' (epoch 0 = the start model)
    seed: int = 0


@dataclass(frozen=True)
class EpochStats:
    """epoch 0 is the model before training. batch_loss: mean minibatch loss (None at epoch 0);
    train_objective: mean loss over every valid triplet of the training set (deterministic, zeros included);
    active_fraction: share of mined triplets with L > 0; val_auc / val_d_prime on held-out pairs."""

    epoch: int
    batch_loss: float | None
    active_fraction: float | None
    train_objective: float
    val_auc: float | None
    val_d_prime: float | None


@dataclass
class TripletTrainingResult:
    config: TripletConfig
    history: list[EpochStats]
    best_epoch: int  # the epoch whose weights the tail holds at the end
    train_index: NDArray[np.int64]
    val_index: NDArray[np.int64]
    summary: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "config": asdict(self.config),
            "history": [asdict(h) for h in self.history],
            "best_epoch": self.best_epoch,
            "n_train_images": int(len(self.train_index)),
            "n_val_images": int(len(self.val_index)),
        }


def holdout_split(
    labels: Sequence[int], fraction: float = 0.25, by: HoldOut = "images", seed: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(train, val) indices. ``images``: each person keeps >= 2 training photos and gives round(fraction·n) of the
    rest (at least 1 when n >= 3) to validation, so validation asks "are new photos of known people close to
    them?". ``identities``: round(fraction·people) whole people go to validation (generalisation to strangers)."""
    rng = random.Random(seed)
    lab = np.asarray(labels)
    people = sorted(set(lab.tolist()))
    val: list[int] = []
    if by == "identities":
        n_val = max(2, round(fraction * len(people)))
        if len(people) - n_val < 2:
            raise InvalidRequest(f"{len(people)} people are too few to hold {n_val} out and still train")
        for person in rng.sample(people, n_val):
            val += np.flatnonzero(lab == person).tolist()
    elif by == "images":
        for person in people:
            idx = np.flatnonzero(lab == person).tolist()
            if len(idx) >= 3:
                rng.shuffle(idx)
                val += idx[: min(len(idx) - 2, max(1, round(fraction * len(idx))))]
    else:
        raise ValueError(f"hold-out must be 'images' or 'identities', got {by!r}")
    val_idx = np.array(sorted(val), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(lab)), val_idx).astype(np.int64)
    return train_idx, val_idx


def validation_pairs(
    labels: Sequence[int], val_index: NDArray[np.int64], by: HoldOut = "images"
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Pairs (i, j, same) to validate on: ``images``: every pair with at least one held-out photo (new photo vs
    the person's known ones, and vs everyone else); ``identities``: every pair among the held-out people."""
    lab = np.asarray(labels)
    n = len(lab)
    i, j = np.triu_indices(n, k=1)
    held = np.zeros(n, dtype=bool)
    held[val_index] = True
    keep = (held[i] | held[j]) if by == "images" else (held[i] & held[j])
    i, j = i[keep], j[keep]
    return i.astype(np.int64), j.astype(np.int64), lab[i] == lab[j]


@torch.no_grad()
def embed_features(tail: Tail, features: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Tail embeddings (N, D) of cached trunk features, eval mode, on the tail's device; returned on the CPU."""
    device = next(tail.parameters()).device
    was_training = tail.training
    tail.eval()
    out = torch.cat([tail(features[s : s + batch_size].to(device)).cpu() for s in range(0, len(features), batch_size)])
    tail.train(was_training)
    return out


def _stats(epoch: int, batch_loss: float | None, active: float | None, emb: torch.Tensor, labels: torch.Tensor,
           train_idx: NDArray[np.int64], pairs: tuple[NDArray, NDArray, NDArray], margin: float) -> EpochStats:
    objective = mean_triplet_loss(emb[train_idx], labels[train_idx], margin)
    i, j, same = pairs
    val_auc = val_dp = None
    if same.any() and not same.all():
        dist = torch.linalg.vector_norm(emb[i] - emb[j], dim=1).double().numpy()
        val_auc, val_dp = auc(dist, same), d_prime(dist, same)
    return EpochStats(epoch, batch_loss, active, objective, val_auc, val_dp)


def train_triplet(
    tail: Tail,
    features: torch.Tensor,
    labels: Sequence[int],
    config: TripletConfig = TripletConfig(),
    flipped: torch.Tensor | None = None,
    holdout: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
    holdout_by: HoldOut = "images",
    progress: bool = True,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TripletTrainingResult:
    """Train `tail` in place on trunk features (N, ...) with labels (N,) int; `flipped` (N, ...) are the features of
    the mirrored crops, used at random when ``config.flip``. `holdout` = (train, val) indices (default
    `holdout_split(labels, by=holdout_by)`). A tqdm bar shows loss and held-out AUC per epoch.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(lab) != len(features):
        raise InvalidRequest(f"{len(features)} feature rows but {len(lab)} labels")
    train_idx, val_idx = holdout if holdout is not None else holdout_split(lab.numpy(), by=holdout_by, seed=config.seed)
    pairs = validation_pairs(lab.numpy(), val_idx, holdout_by)
    sampler = PKBatchSampler(lab[train_idx].tolist(), config.p, config.k, config.batches_per_epoch, config.seed)
    device = next(tail.parameters()).device
    params = [p for p in tail.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)

    history = [_stats(0, None, None, embed_features(tail, features), lab, train_idx, pairs, config.margin)]
    best_key, best_epoch, best_state = _rank(history[0]), 0, copy.deepcopy(tail.state_dict())
    bar = tqdm(range(1, config.epochs + 1), desc=f"triplet/{config.mining}", unit="epoch", disable=not progress)
    for epoch in bar:
        tail.train()
        sampler.set_epoch(epoch)
        losses, mined, active = [], 0, 0
        for batch in sampler:
            rows = torch.as_tensor(train_idx[batch])
            x = features[rows]
            if flipped is not None and config.flip:
                use_flip = torch.as_tensor(rng.random(len(rows)) < 0.5)
                x = torch.where(use_flip.view(-1, *([1] * (x.dim() - 1))), flipped[rows], x)
            out = batch_triplet_loss(tail(x.to(device)), lab[rows].to(device), config.margin, config.mining)
            optimiser.zero_grad(set_to_none=True)
            out.loss.backward()
            optimiser.step()
            losses.append(float(out.loss.detach()))
            mined, active = mined + out.n_triplets, active + out.n_active
        stats = _stats(epoch, float(np.mean(losses)), active / mined if mined else 0.0,
                       embed_features(tail, features), lab, train_idx, pairs, config.margin)
        history.append(stats)
        if _rank(stats) > best_key:
            best_key, best_epoch, best_state = _rank(stats), epoch, copy.deepcopy(tail.state_dict())
        bar.set_postfix(loss=f"{stats.batch_loss:.4f}", val_auc=_fmt(stats.val_auc), val_dprime=_fmt(stats.val_d_prime))
        if on_epoch is not None:
            on_epoch(stats)
    bar.close()
    if config.restore_best:
        tail.load_state_dict(best_state)
    else:
        best_epoch = config.epochs
    tail.eval()
    return TripletTrainingResult(config, history, best_epoch, train_idx, val_idx)


def _rank(s: EpochStats) -> tuple[float, float]:
    """Model selection key: held-out AUC, then d' (finer once AUC saturates); without validation, -objective."""
    if s.val_auc is None:
        return (-s.train_objective, 0.0)
    return (s.val_auc, s.val_d_prime if s.val_d_prime is not None and math.isfinite(s.val_d_prime) else 0.0)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
