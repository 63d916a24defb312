"""1:1 verification metrics on pair distances: ROC, AUC, EER, 10-fold accuracy, TAR at FAR.

Convention everywhere: `distances` is (n,) float (L2 between normalised embeddings, or any dissimilarity) and
`same` is (n,) bool; a pair is called "same person" when distance <= tau. FAR is the fraction of different-person
pairs accepted, TAR the fraction of same-person pairs accepted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold

from faceid.indexer.errors import InvalidRequest

DEFAULT_FARS: tuple[float, ...] = (1e-1, 1e-2, 1e-3)


@dataclass(frozen=True)
class RocCurve:
    """ROC as (far, tar) points, one per distinct distance, with the tau that gives each point.

    `far`, `tar`, `tau` are (m,) float64; tau[0] = -inf (accept nothing), far and tar non-decreasing.
    """

    far: NDArray[np.float64]
    tar: NDArray[np.float64]
    tau: NDArray[np.float64]


@dataclass(frozen=True)
class OperatingPoint:
    """TAR at a target FAR. `tar`/`tau`/`far` are None when there are too few different-person pairs
    (fewer than 1/target), in which case `note` says so instead of making a figure up."""

    target_far: float
    tau: float | None
    far: float | None
    tar: float | None
    n_same: int
    n_different: int
    note: str = ""

    @property
    def enough_pairs(self) -> bool:
        return self.tau is not None


@dataclass(frozen=True)
class BestAccuracy:
    """Accuracy at the best tau; the same accuracy holds for any tau in [low, high)."""

    accuracy: float
    tau: float
    low: float
    high: float


@dataclass(frozen=True)
class CrossValidatedAccuracy:
    """LFW protocol: tau chosen on k-1 folds (best accuracy), accuracy measured on the held-out fold."""

    mean: float
    std: float
    fold_accuracy: tuple[float, ...]
    fold_tau: tuple[float, ...]
    folds_from_file: bool


@dataclass(frozen=True)
class VerificationReport:
    n_same: int
    n_different: int
    auc: float
    eer: float
    tau_eer: float
    best: BestAccuracy
    cv: CrossValidatedAccuracy | None
    tar_at_far: tuple[OperatingPoint, ...]
    d_prime: float
    roc: RocCurve


def check_scores(distances: ArrayLike, same: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """(n,) float64 distances and (n,) bool labels, checked: equal length, finite, both classes present."""
    d = np.asarray(distances, dtype=np.float64).ravel()
    s = np.asarray(same, dtype=bool).ravel()
    if d.shape != s.shape:
        raise InvalidRequest(f"distances {d.shape} and labels {s.shape} differ in length")
    if not np.isfinite(d).all():
        raise InvalidRequest("distances contain NaN or infinity")
    if s.all() or not s.any():
        raise InvalidRequest(
            f"need both same-person and different-person pairs; got {int(s.sum())} same, {int((~s).sum())} different"
        )
    return d, s


def roc(distances: ArrayLike, same: ArrayLike) -> RocCurve:
    """Full ROC (every distinct distance is a point), via sklearn.metrics.roc_curve on score = -distance."""
    d, s = check_scores(distances, same)
    far, tar, thr = roc_curve(s, -d, drop_intermediate=False)
    return RocCurve(far.astype(np.float64), tar.astype(np.float64), -thr.astype(np.float64))


def auc(distances: ArrayLike, same: ArrayLike) -> float:
    d, s = check_scores(distances, same)
    return float(roc_auc_score(s, -d))


def equal_error_rate(curve: RocCurve) -> tuple[float, float]:
    """(EER, tau at EER), linearly interpolated on the ROC segment where FAR crosses FRR = 1 - TAR.

    When the classes are separable the ROC passes through (0, 1): EER is 0 and tau is the middle of the
    error-free interval [largest same distance, smallest different distance].
    """
    frr = 1.0 - curve.tar
    gap = curve.far - frr  # rises from -1 (accept nothing) to +1 (accept everything)
    i = int(np.argmax(gap >= 0.0))
    if gap[i] == 0.0:
        if curve.far[i] == 0.0 and i + 1 < len(gap):  # error-free interval [tau_i, tau_{i+1})
            return 0.0, float((curve.tau[i] + curve.tau[i + 1]) / 2.0)
        return float(curve.far[i]), float(curve.tau[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    eer = curve.far[i - 1] + t * (curve.far[i] - curve.far[i - 1])
    tau = curve.tau[i] if not np.isfinite(curve.tau[i - 1]) else curve.tau[i - 1] + t * (curve.tau[i] - curve.tau[i - 1])
    return float(eer), float(tau)


def min_negatives(target_far: float) -> int:
    """How many negatives (different-person pairs, strangers) a FAR of `target_far` needs: ceil(1 / target)."""
    return math.ceil(1.0 / target_far - 1e-9)


def threshold_at_far(negatives: ArrayLike, observed: ArrayLike, target_far: float) -> float | None:
    """The tau that accepts as many as possible while at most floor(target * n) of the n `negatives` have d <= tau.

    Everything below the (k+1)-th smallest negative, k = floor(target * n), is accepted; tau is the middle between
    that negative and the largest `observed` distance below it (both give the same counts on these data; the middle
    generalises better). None when n < 1/target: no false accept can be resolved and a figure would be made up.
    """
    neg = np.sort(np.asarray(negatives, dtype=np.float64).ravel())
    seen = np.asarray(observed, dtype=np.float64).ravel()
    if not 0.0 < target_far < 1.0:
        raise InvalidRequest(f"target FAR must be in (0, 1), got {target_far}")
    if len(neg) < min_negatives(target_far):
        return None
    k = int(math.floor(target_far * len(neg) + 1e-9))
    if k >= len(neg):
        return float(max(neg.max(), seen.max(initial=-np.inf)))
    upper = neg[k]
    below = np.concatenate((seen[seen < upper], neg[neg < upper]))
    if not below.size:
        return float(np.nextafter(upper, -np.inf))
    middle = (below.max() + upper) / 2.0
    return float(middle if middle < upper else below.max())  # adjacent floats: the middle can round up


def tar_at_far(distances: ArrayLike, same: ArrayLike, target_far: float) -> OperatingPoint:
    """The best TAR whose FAR on these pairs is <= target_far, and a tau that gives it (see threshold_at_far).

    With fewer than 1/target different-person pairs the result says "not enough pairs" instead of a figure.
    """
    d, s = check_scores(distances, same)
    n_same, n_diff = int(s.sum()), int((~s).sum())
    tau = threshold_at_far(d[~s], d, target_far)
    if tau is None:
        return OperatingPoint(
            target_far, None, None, None, n_same, n_diff,
            f"not enough pairs: FAR {target_far:g} needs >= {min_negatives(target_far)} different-person pairs, "
            f"have {n_diff}",
        )
    accepted = d <= tau
    return OperatingPoint(
        target_far,
        tau,
        float(accepted[~s].mean()),
        float(accepted[s].mean()),
        n_same,
        n_diff,
    )


def best_accuracy(distances: ArrayLike, same: ArrayLike) -> BestAccuracy:
    """Highest pair accuracy over all tau, and the middle of the first interval of tau that reaches it."""
    d, s = check_scores(distances, same)
    u = np.unique(d)  # tau = u[i] accepts every d <= u[i]; accuracy is constant on [u[i], u[i+1])
    same_sorted, diff_sorted = np.sort(d[s]), np.sort(d[~s])
    tp = np.searchsorted(same_sorted, u, side="right")
    tn = len(diff_sorted) - np.searchsorted(diff_sorted, u, side="right")
    correct = np.concatenate(([len(diff_sorted)], tp + tn))  # index 0: tau below everything
    best = int(correct.max())
    start = int(np.argmax(correct == best))
    after = np.flatnonzero(correct[start:] != best)
    end = start + int(after[0]) - 1 if after.size else len(correct) - 1
    # correct[i] holds for tau in [u[i-1], u[i]) (u[-1] := -inf, u[len] := +inf)
    low = float(u[start - 1]) if start > 0 else -math.inf
    high = float(u[end]) if end < len(u) else math.inf
    if math.isinf(low) and math.isinf(high):  # unreachable: both classes are present
        tau = float(u[0])
    elif math.isinf(low):  # rejecting (nearly) everything is best
        tau = float(np.nextafter(u[0], -np.inf)) if end == 0 else (float(u[0]) + high) / 2.0
    elif math.isinf(high):  # accepting everything is best
        tau = float(u[-1])
    else:
        tau = (low + high) / 2.0
    return BestAccuracy(best / len(d), tau, low, high)


def cross_validated_accuracy(
    distances: ArrayLike, same: ArrayLike, folds: ArrayLike | None = None, n_folds: int = 10, seed: int = 0
) -> CrossValidatedAccuracy | None:
    """10-fold accuracy, LFW protocol: for each fold, tau = best-accuracy tau of the other folds.

    `folds` (n,) int gives the fold of each pair (LFW sets); otherwise pairs are split by a stratified,
    seeded KFold. Returns None when a class has fewer pairs than 2 folds need.
    """
    d, s = check_scores(distances, same)
    from_file = folds is not None and len(np.unique(np.asarray(folds))) >= 2
    if from_file:
        fold_of = np.asarray(folds, dtype=np.int64).ravel()
        if fold_of.shape != d.shape:
            raise InvalidRequest(f"folds {fold_of.shape} and distances {d.shape} differ in length")
    else:
        k = min(n_folds, int(s.sum()), int((~s).sum()))
        if k < 2:
            return None
        fold_of = np.empty(len(d), dtype=np.int64)
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for f, (_, test) in enumerate(splitter.split(d, s)):
            fold_of[test] = f
    accs, taus = [], []
    for f in np.unique(fold_of):
        train, test = fold_of != f, fold_of == f
        if s[train].all() or not s[train].any():
            raise InvalidRequest(f"fold {f}: the other folds hold only one class of pairs; cannot choose tau")
        tau = best_accuracy(d[train], s[train]).tau
        taus.append(tau)
        accs.append(float(((d[test] <= tau) == s[test]).mean()))
    return CrossValidatedAccuracy(float(np.mean(accs)), float(np.std(accs)), tuple(accs), tuple(taus), from_file)


def d_prime(distances: ArrayLike, same: ArrayLike) -> float:
    """Separation (mean_diff - mean_same) / sqrt((var_same + var_diff) / 2): finer than AUC once AUC saturates."""
    d, s = check_scores(distances, same)
    pooled = math.sqrt((d[s].var() + d[~s].var()) / 2.0)
    gap = float(d[~s].mean() - d[s].mean())
    return gap / pooled if pooled > 0 else math.copysign(math.inf, gap)


def verification_report(
    distances: ArrayLike,
    same: ArrayLike,
    folds: ArrayLike | None = None,
    fars: Sequence[float] = DEFAULT_FARS,
    n_folds: int = 10,
    seed: int = 0,
) -> VerificationReport:
    """Every verification metric of one set of pairs (see the functions above for each definition)."""
    d, s = check_scores(distances, same)
    curve = roc(d, s)
    eer, tau_eer = equal_error_rate(curve)
    return VerificationReport(
        n_same=int(s.sum()),
        n_different=int((~s).sum()),
        auc=auc(d, s),
        eer=eer,
        tau_eer=tau_eer,
        best=best_accuracy(d, s),
        cv=cross_validated_accuracy(d, s, folds, n_folds, seed),
        tar_at_far=tuple(tar_at_far(d, s, f) for f in fars),
        d_prime=d_prime(d, s),
        roc=curve,
    )
