"""Triplet loss and online triplet mining (FaceNet, Schroff et al. 2015; batch-hard / batch-all, Hermans et al. 2017).

L(a, p, n) = max(‖f(a) − f(p)‖² − ‖f(a) − f(n)‖² + α, 0) on L2-normalised embeddings f, squared distances as in
FaceNet. Mining picks, inside one P×K batch, which (anchor, positive, negative) index triplets the loss sees:

- ``batch_all``: every valid triplet (a ≠ p same label, n another label); the loss averages the triplets with
  L > 0 only, so the many already-satisfied triplets do not dilute the gradient (Hermans et al.).
- ``hard``: per anchor, its farthest positive and nearest negative ("batch hard"); mean over anchors.
- ``semi_hard``: per anchor-positive pair, the nearest negative that is still farther than the positive
  (d²(a,n) > d²(a,p), Schroff et al. §3.2); when no negative is farther, the farthest negative (the least
  harmful choice, as TensorFlow Addons' ``triplet_semihard_loss`` does). Mean over anchor-positive pairs.

Every function takes embeddings (B, D) float and labels (B,) int64 tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Mining = Literal["batch_all", "semi_hard", "hard"]
MINING_CHOICES: tuple[str, ...] = ("batch_all", "semi_hard", "hard")


@dataclass(frozen=True)
class Triplets:
    """Index triplets into a batch: anchor, positive, negative are (T,) int64 tensors of equal length."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:
        return int(self.anchor.numel())


@dataclass(frozen=True)
class TripletLossResult:
    loss: torch.Tensor  # scalar, differentiable
    n_triplets: int  # triplets mined
    n_active: int  # triplets with L > 0


def squared_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, D) → (B, B) squared L2 distances, exact differences (no ‖a‖² + ‖b‖² − 2ab cancellation)."""
    diff = embeddings[:, None, :] - embeddings[None, :, :]
    return (diff * diff).sum(-1)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """Per-triplet loss (T,) for embeddings (T, D): max(‖a − p‖² − ‖a − n‖² + margin, 0)."""
    d_ap = ((anchor - positive) ** 2).sum(-1)
    d_an = ((anchor - negative) ** 2).sum(-1)
    return torch.clamp(d_ap - d_an + margin, min=0.0)


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same  # positive pairs (a != p), negative pairs


@torch.no_grad()
def mine_batch_all(embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """Every valid triplet (a, p, n): labels[a] == labels[p], a != p, labels[n] != labels[a]; ordered by (a, p, n)."""
    pos, neg = _masks(labels)
    a, p, n = torch.nonzero(pos[:, :, None] & neg[:, None, :], as_tuple=True)
    return Triplets(a, p, n)


@torch.no_grad()
def mine_hard(embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """Per anchor with at least one positive and one negative: farthest positive, nearest negative."""
    d = squared_distances(embeddings)
    pos, neg = _masks(labels)
    ok = pos.any(1) & neg.any(1)
    anchors = torch.nonzero(ok, as_tuple=True)[0]
    hardest_pos = torch.where(pos, d, torch.full_like(d, -torch.inf)).argmax(1)
    hardest_neg = torch.where(neg, d, torch.full_like(d, torch.inf)).argmin(1)
    return Triplets(anchors, hardest_pos[anchors], hardest_neg[anchors])


@torch.no_grad()
def mine_semi_hard(embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """Per anchor-positive pair (a, p): nearest negative n with d²(a, n) > d²(a, p), else the farthest negative."""
    d = squared_distances(embeddings)
    pos, neg = _masks(labels)
    a, p = torch.nonzero(pos & neg.any(1, keepdim=True), as_tuple=True)
    d_an = d[a]  # (T, B) distances from each pair's anchor
    is_neg = neg[a]
    farther = is_neg & (d_an > d[a, p][:, None])
    semi = torch.where(farther, d_an, torch.full_like(d_an, torch.inf)).argmin(1)
    easiest = torch.where(is_neg, d_an, torch.full_like(d_an, -torch.inf)).argmax(1)
    n = torch.where(farther.any(1), semi, easiest)
    return Triplets(a, p, n)


MINERS = {"batch_all": mine_batch_all, "semi_hard": mine_semi_hard, "hard": mine_hard}


def batch_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, mining: Mining = "semi_hard"
) -> TripletLossResult:
    """Mine triplets in a batch and reduce their losses as the mining strategy prescribes (see module docstring).

    Returns a zero loss (still attached to the graph) when the batch holds no valid triplet.
    """
    if mining not in MINERS:
        raise ValueError(f"unknown mining {mining!r}; choose one of {', '.join(MINING_CHOICES)}")
    t = MINERS[mining](embeddings, labels)
    if len(t) == 0:
        return TripletLossResult(embeddings.sum() * 0.0, 0, 0)
    per = triplet_loss(embeddings[t.anchor], embeddings[t.positive], embeddings[t.negative], margin)
    active = per > 0
    n_active = int(active.sum())
    if mining == "batch_all":
        loss = per.sum() / max(n_active, 1)
    else:
        loss = per.mean()
    return TripletLossResult(loss, len(t), n_active)


@torch.no_grad()
def mean_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, chunk: int = 64) -> float:
    """Mean loss over every valid triplet of a whole set (zeros included): a deterministic training objective
    to compare before and after training, unlike the hardness-aware minibatch averages.

    Anchors are processed `chunk` at a time, so memory is chunk × B × B rather than B³.
    """
    d = squared_distances(embeddings)
    pos, neg = _masks(labels)
    total, count = 0.0, 0
    for start in range(0, len(labels), chunk):
        rows = slice(start, start + chunk)
        valid = pos[rows][:, :, None] & neg[rows][:, None, :]
        per = torch.clamp(d[rows][:, :, None] - d[rows][:, None, :] + margin, min=0.0)
        total += float(per[valid].sum())
        count += int(valid.sum())
    return total / count if count else 0.0
