"""Open-set 1:K identification metrics: rank-k, DIR at FAR, and how often a stranger gets a name.

A gallery of enrolled faces (several per identity) is searched with probe faces. Some probes are of enrolled
people ("known"), some of people never enrolled ("unknown", strangers). An identity's distance to a probe is its
nearest enrolled face (the service aggregates the same way); the answer is the nearest identity, or "unknown"
when that distance is above tau.

- rank-k: closed-set, known probes only: the true identity is among the k nearest identities.
- DIR at FAR (detection and identification rate, NIST FRVT / Grother's open-set protocol): tau is chosen so that
  at most FAR of the unknown probes get any name; DIR is the fraction of known probes named correctly at that tau.
- At the operating tau: the fraction of unknown probes that get a name (false accepts), and for known probes the
  fractions named correctly, named wrongly, and rejected.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from faceid.indexer.errors import InvalidRequest
from faceid.indexer.evaluation.verification import min_negatives, threshold_at_far


@dataclass(frozen=True)
class OpenSetSplit:
    """Who is enrolled with which photos, and which photos are probes (known or strangers)."""

    gallery: tuple[tuple[str, Path], ...]
    known_probes: tuple[tuple[str, Path], ...]
    unknown_probes: tuple[tuple[str, Path], ...]


def open_set_splits(
    identities: Mapping[str, Sequence[Path]], n_folds: int = 4, gallery_per_identity: int = 2, seed: int = 0
) -> list[OpenSetSplit]:
    """Rotate strangers: people are shuffled into `n_folds` groups; in split f group f is never enrolled.

    Every enrolled person puts `gallery_per_identity` (shuffled) photos in the gallery and the rest in the probes;
    each person is a stranger in exactly one split, so pooling the splits uses every photo as an unknown probe once.
    """
    people = sorted(identities)
    if n_folds < 2 or n_folds > len(people):
        raise InvalidRequest(f"{len(people)} people allow 2..{len(people)} stranger folds, asked {n_folds}")
    if gallery_per_identity < 1:
        raise InvalidRequest("gallery_per_identity must be >= 1")
    rng = random.Random(seed)
    rng.shuffle(people)
    photos = {p: list(identities[p]) for p in people}
    for p in people:
        rng.shuffle(photos[p])
    splits = []
    for f in range(n_folds):
        strangers = set(people[f::n_folds])
        gallery, known, unknown = [], [], []
        for p in sorted(people):
            if p in strangers:
                unknown += [(p, x) for x in photos[p]]
            else:
                gallery += [(p, x) for x in photos[p][:gallery_per_identity]]
                known += [(p, x) for x in photos[p][gallery_per_identity:]]
        splits.append(OpenSetSplit(tuple(gallery), tuple(known), tuple(unknown)))
    return splits


@dataclass(frozen=True)
class ProbeScores:
    """Search outcome per probe (q probes). Pool several splits with `concat`.

    best_distance (q,) float64: distance to the nearest identity; best_correct (q,) bool: that identity is the
    probe's own; known (q,) bool: the probe's identity is enrolled; true_rank (q,) int64: 1-based rank of the
    probe's identity among all identities (0 for unknown probes).
    """

    best_distance: NDArray[np.float64]
    best_correct: NDArray[np.bool_]
    known: NDArray[np.bool_]
    true_rank: NDArray[np.int64]

    @staticmethod
    def concat(parts: Sequence[ProbeScores]) -> ProbeScores:
        return ProbeScores(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                             ("best_distance", "best_correct", "known", "true_rank")))


def score_probes(
    gallery: NDArray[np.float32],
    gallery_ids: Sequence[str],
    probes: NDArray[np.float32],
    probe_ids: Sequence[str],
) -> ProbeScores:
    """Search every probe (q, d) against the gallery (m, d) of L2-normalised embeddings (L2 distance)."""
    g = np.asarray(gallery, dtype=np.float64)
    q = np.asarray(probes, dtype=np.float64)
    if g.ndim != 2 or q.ndim != 2 or g.shape[1] != q.shape[1]:
        raise InvalidRequest(f"gallery {g.shape} and probes {q.shape} must be (m, d) and (q, d)")
    if len(gallery_ids) != len(g) or len(probe_ids) != len(q):
        raise InvalidRequest("one identity label per gallery row and per probe row is needed")
    names = sorted(set(gallery_ids))
    col = {n: i for i, n in enumerate(names)}
    sq = (q**2).sum(1)[:, None] + (g**2).sum(1)[None, :] - 2.0 * q @ g.T  # (q, m), no (q, m, d) temporary
    dist = np.sqrt(np.maximum(sq, 0.0))
    per_id = np.full((len(q), len(names)), np.inf)
    for j, name in enumerate(gallery_ids):  # nearest enrolled face of each identity
        per_id[:, col[name]] = np.minimum(per_id[:, col[name]], dist[:, j])
    order = np.argsort(per_id, axis=1, kind="stable")
    best = per_id[np.arange(len(q)), order[:, 0]]
    known = np.array([p in col for p in probe_ids], dtype=bool)
    true_rank = np.zeros(len(q), dtype=np.int64)
    for i, p in enumerate(probe_ids):
        if p in col:
            true_rank[i] = int(np.flatnonzero(order[i] == col[p])[0]) + 1
    return ProbeScores(best, true_rank == 1, known, true_rank)


@dataclass(frozen=True)
class DetectionAndIdentificationRate:
    """DIR at a target FAR of unknown probes; None figures (with a note) when there are too few strangers."""

    target_far: float
    tau: float | None
    far: float | None
    dir: float | None
    n_known: int
    n_unknown: int
    note: str = ""


@dataclass(frozen=True)
class IdentificationReport:
    n_known: int
    n_unknown: int
    rank_accuracy: dict[int, float]  # rank k -> fraction of known probes with the true identity in the top k
    dir_at_far: tuple[DetectionAndIdentificationRate, ...]
    tau: float  # the operating threshold the following rates are measured at
    unknown_named_rate: float | None  # strangers that got a name at tau (None when there are no strangers)
    known_correct_rate: float  # known probes named correctly at tau
    known_wrong_rate: float  # known probes given someone else's name at tau
    known_rejected_rate: float  # known probes answered "unknown" at tau


def identification_report(
    scores: ProbeScores, tau: float, fars: Sequence[float] = (1e-1, 1e-2), ranks: Sequence[int] = (1, 5)
) -> IdentificationReport:
    known = scores.known
    if not known.any():
        raise InvalidRequest("no probe of an enrolled person: rank and DIR need known probes")
    n_known, n_unknown = int(known.sum()), int((~known).sum())
    d_known, d_unknown = scores.best_distance[known], scores.best_distance[~known]
    correct = scores.best_correct[known]
    dirs = []
    for far in fars:
        t = threshold_at_far(d_unknown, scores.best_distance, far)
        if t is None:
            dirs.append(DetectionAndIdentificationRate(
                far, None, None, None, n_known, n_unknown,
                f"not enough strangers: FAR {far:g} needs >= {min_negatives(far)} unknown probes, have {n_unknown}",
            ))
            continue
        dirs.append(DetectionAndIdentificationRate(
            far, t, float((d_unknown <= t).mean()), float(((d_known <= t) & correct).mean()), n_known, n_unknown
        ))
    accepted = d_known <= tau
    return IdentificationReport(
        n_known=n_known,
        n_unknown=n_unknown,
        rank_accuracy={k: float((scores.true_rank[known] <= k).mean()) for k in ranks},
        dir_at_far=tuple(dirs),
        tau=float(tau),
        unknown_named_rate=float((d_unknown <= tau).mean()) if n_unknown else None,
        known_correct_rate=float((accepted & correct).mean()),
        known_wrong_rate=float((accepted & ~correct).mean()),
        known_rejected_rate=float((~accepted).mean()),
    )
