"""Siamese verification head on precomputed embeddings (DeepFace, Taigman et al. 2014, §4.2).

ŷ = σ(Σ_k w_k · φ_k(f_i, f_j) + b), trained with logistic loss on labeled pairs, where φ is one of

- ``l1``:  φ_k = |f_ik − f_jk|
- ``chi2``: φ_k = (g_ik − g_jk)² / (g_ik + g_jk + eps), with g = (1 + f) / 2.

The χ² distance is defined for non-negative features (DeepFace's are post-ReLU), but an L2-normalised FaceNet
embedding has components in [−1, 1] with either sign, so f_ik + f_jk can be 0 or negative and the raw ratio would
explode or flip sign. The affine shift g = (1 + f)/2 maps every component of any unit vector into [0, 1] without
losing information (unlike |f|, which would call f and −f identical); then the denominator is >= 0 and eps = 1e-6
only guards the 0/0 of two components both equal to −1. In terms of f: φ_k = (f_ik − f_jk)² / (2·(2 + f_ik + f_jk) + 4·eps).

The fit is sklearn's LogisticRegression (L2 penalty C, classes weighted equally, features standardised); the
standardisation is folded back, so the stored (w, b) act on the raw φ exactly as in the formula above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from faceid.indexer.errors import InvalidRequest

PairFeature = Literal["l1", "chi2"]
CHI2_EPS = 1e-6


def pair_features(a: NDArray[np.floating], b: NDArray[np.floating], kind: PairFeature, eps: float = CHI2_EPS
                  ) -> NDArray[np.float64]:
    """φ(a, b) for embeddings a, b (n, d) → (n, d) float64 (see the module docstring)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InvalidRequest(f"pair features need two (n, d) arrays of one shape, got {a.shape} and {b.shape}")
    if kind == "l1":
        return np.abs(a - b)
    if kind == "chi2":
        ga, gb = (1.0 + a) / 2.0, (1.0 + b) / 2.0
        return (ga - gb) ** 2 / (ga + gb + eps)
    raise InvalidRequest(f"unknown pair feature {kind!r}; choose 'l1' or 'chi2'")


@dataclass(frozen=True)
class SiameseVerifier:
    """A trained head: `probability(a, b)` = σ(weight · φ(a, b) + bias), weight (d,) float64."""

    kind: PairFeature
    weight: NDArray[np.float64]
    bias: float
    eps: float = CHI2_EPS

    def logit(self, a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
        return pair_features(np.atleast_2d(a), np.atleast_2d(b), self.kind, self.eps) @ self.weight + self.bias

    def probability(self, a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
        """P(same person) for embeddings a, b: (d,) or (n, d) each → (n,)."""
        return 0.5 * (1.0 + np.tanh(0.5 * self.logit(a, b)))  # sigmoid without overflow warnings


def fit_siamese(
    emb_a: NDArray[np.floating], emb_b: NDArray[np.floating], same: NDArray[np.bool_], kind: PairFeature = "l1",
    c: float = 1.0, max_iter: int = 2000,
) -> SiameseVerifier:
    """Fit the head with logistic loss on pairs: emb_a, emb_b (n, d) embeddings, same (n,) bool."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(same, dtype=bool)
    if y.all() or not y.any():
        raise InvalidRequest("the Siamese head needs both same-person and different-person pairs")
    x = pair_features(emb_a, emb_b, kind)
    mu, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1.0
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter)
    model.fit((x - mu) / sd, y)
    w = model.coef_[0] / sd
    return SiameseVerifier(kind, w, float(model.intercept_[0] - (w * mu).sum()))
