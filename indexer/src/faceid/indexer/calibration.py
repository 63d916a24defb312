"""Threshold calibration: tau for a target FAR from labeled pairs, and P(same | distance) by logistic fit.

A model card's default tau is chosen on someone else's photos; a deployment's own people and cameras move the
distance distributions. `calibrate` picks the tau whose false accept rate on the caller's labeled pairs is at
most the target, and fits a logistic curve P(same | d) = 1 / (1 + exp(-(a + b·d))) on the same pairs so that
Verify and Identify can return a calibrated match probability beside the raw distance.

The logistic fit weighs the two classes equally (sklearn ``class_weight="balanced"``): the probability is the
one for a question asked with even prior odds, whatever the ratio of same to different pairs in the calibration
set (all-pairs sets hold ~20× more different pairs, which would otherwise bake that ratio in). Distances are
standardised before the fit so that sklearn's default L2 penalty (C = 1) does not depend on the distance scale;
on separable pairs the penalty is what keeps the slope finite.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np
from numpy.typing import ArrayLike, NDArray

from faceid.indexer.errors import InvalidRequest
from faceid.indexer.evaluation.verification import check_scores, min_negatives, threshold_at_far

CALIBRATION_VERSION = 1


@dataclass(frozen=True)
class Calibration:
    """A model's calibrated operating point and match-probability curve (JSON-serialisable).

    tau: accept "same person" when distance <= tau; far / tar: the rates tau gives on the calibration pairs.
    P(same | d) = 1 / (1 + exp(-(intercept + slope·d))), slope < 0, for even prior odds.
    """

    model_id: str
    target_far: float
    tau: float
    far: float
    tar: float
    n_same: int
    n_different: int
    intercept: float
    slope: float
    created_at: str
    version: int = CALIBRATION_VERSION

    def probability(self, distance: ArrayLike) -> NDArray[np.float64]:
        """P(same person | distance) for an array of distances (same shape out)."""
        z = self.intercept + self.slope * np.asarray(distance, dtype=np.float64)
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = sigmoid(z), without overflow warnings for large |z|

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Calibration:
        version = int(data.get("version", CALIBRATION_VERSION))  # type: ignore[arg-type]
        if version != CALIBRATION_VERSION:
            raise InvalidRequest(f"calibration format version {version} is not supported (expected {CALIBRATION_VERSION})")
        return cls(**data)  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class LogisticFit:
    intercept: float
    slope: float


def fit_match_probability(distances: ArrayLike, same: ArrayLike) -> LogisticFit:
    """Logistic regression of `same` on distance, classes weighted equally; coefficients in distance units."""
    from sklearn.linear_model import LogisticRegression

    d, s = check_scores(distances, same)
    mu, sd = float(d.mean()), float(d.std())
    sd = sd if sd > 0 else 1.0
    model = LogisticRegression(class_weight="balanced")
    model.fit(((d - mu) / sd)[:, None], s)
    w, c = float(model.coef_[0, 0]), float(model.intercept_[0])
    return LogisticFit(intercept=c - w * mu / sd, slope=w / sd)


def calibrate(distances: ArrayLike, same: ArrayLike, target_far: float, model_id: str) -> Calibration:
    """Choose tau for `target_far` on labeled pairs (n,) and fit P(same | d).

    tau accepts as many same-person pairs as possible while at most floor(target · n_different) different-person
    pairs have d <= tau (see evaluation.threshold_at_far). Raises InvalidRequest when there are fewer than
    1/target different-person pairs: such a target cannot be measured, so no tau is made up.
    """
    d, s = check_scores(distances, same)
    n_diff = int((~s).sum())
    tau = threshold_at_far(d[~s], d, target_far)
    if tau is None:
        raise InvalidRequest(
            f"FAR {target_far:g} needs at least {min_negatives(target_far)} different-person pairs to be measured; "
            f"the calibration set has {n_diff}. Add photos of more people, or ask for a larger FAR."
        )
    fit = fit_match_probability(d, s)
    accepted = d <= tau
    return Calibration(
        model_id=model_id,
        target_far=float(target_far),
        tau=tau,
        far=float(accepted[~s].mean()),
        tar=float(accepted[s].mean()),
        n_same=int(s.sum()),
        n_different=n_diff,
        intercept=fit.intercept,
        slope=fit.slope,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
