"""Whole evaluations of embedded images (pairs, open-set identification) and their plain-text / JSON forms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid.indexer.errors import InvalidRequest
from faceid.indexer.evaluation.embedded import DetectionFailure, EmbeddedImages, PairDistances, pair_distances
from faceid.indexer.evaluation.identification import (
    IdentificationReport,
    OpenSetSplit,
    ProbeScores,
    identification_report,
    score_probes,
)
from faceid.indexer.evaluation.pairs import ImagePair
from faceid.indexer.evaluation.verification import DEFAULT_FARS, VerificationReport, verification_report


@dataclass(frozen=True)
class PairsEvaluation:
    """Verification metrics of the pairs whose images were both embedded; the rest are listed, not hidden."""

    model_id: str
    n_pairs: int
    report: VerificationReport
    distances: PairDistances
    failures: tuple[DetectionFailure, ...]

    @property
    def skipped(self) -> tuple[ImagePair, ...]:
        return self.distances.skipped


def evaluate_pairs(
    pairs: Sequence[ImagePair], images: EmbeddedImages, fars: Sequence[float] = DEFAULT_FARS, seed: int = 0
) -> PairsEvaluation:
    """Distances of every pair, then every verification metric (10-fold CV on the file's folds when it has them)."""
    if not pairs:
        raise InvalidRequest("no pairs to evaluate")
    dist = pair_distances(pairs, images)
    if len(dist.pairs) == 0:
        raise InvalidRequest(f"none of the {len(pairs)} pairs has both images embedded ({len(images.failures)} failed)")
    report = verification_report(dist.distances, dist.same, dist.folds, fars, seed=seed)
    return PairsEvaluation(images.model_id, len(pairs), report, dist, images.failures)


@dataclass(frozen=True)
class IdentificationEvaluation:
    model_id: str
    n_splits: int
    gallery_sizes: tuple[int, ...]  # enrolled faces per split
    report: IdentificationReport
    scores: ProbeScores
    failures: tuple[DetectionFailure, ...]


def evaluate_identification(
    splits: Sequence[OpenSetSplit], images: EmbeddedImages, tau: float, fars: Sequence[float] = (1e-1, 1e-2),
    ranks: Sequence[int] = (1, 5),
) -> IdentificationEvaluation:
    """Score every split's probes against its gallery, pool the probes of all splits, and report at `tau`.

    Photos that failed detection are left out of galleries and probes (and listed in `failures`).
    """
    parts, sizes = [], []
    for split in splits:
        gallery = [(n, p) for n, p in split.gallery if images.row(p) is not None]
        probes = [(n, p) for n, p in (*split.known_probes, *split.unknown_probes) if images.row(p) is not None]
        if not gallery or not probes:
            raise InvalidRequest("a split has no embedded gallery photo or no embedded probe")
        g = images.vectors[images.rows([p for _, p in gallery])]
        q = images.vectors[images.rows([p for _, p in probes])]
        parts.append(score_probes(g, [n for n, _ in gallery], q, [n for n, _ in probes]))
        sizes.append(len(gallery))
    scores = ProbeScores.concat(parts)
    report = identification_report(scores, tau, fars, ranks)
    return IdentificationEvaluation(images.model_id, len(splits), tuple(sizes), report, scores, images.failures)


def format_pairs_evaluation(ev: PairsEvaluation) -> str:
    """A human-readable summary (what the CLI prints without --json)."""
    r = ev.report
    lines = [
        f"model {ev.model_id}: {len(ev.distances.pairs)} of {ev.n_pairs} pairs evaluated "
        f"({r.n_same} same, {r.n_different} different)",
        f"ROC AUC {r.auc:.6f}   EER {100 * r.eer:.2f}% at tau {r.tau_eer:.3f}   d' {r.d_prime:.2f}",
        f"best accuracy {r.best.accuracy:.4f} at tau {r.best.tau:.3f} (any tau in [{r.best.low:.3f}, {r.best.high:.3f}))",
    ]
    if r.cv is not None:
        origin = "folds of the pairs file" if r.cv.folds_from_file else f"{len(r.cv.fold_accuracy)} stratified folds"
        lines.append(f"{len(r.cv.fold_accuracy)}-fold accuracy {r.cv.mean:.4f} ± {r.cv.std:.4f} ({origin}, "
                     "tau chosen on the other folds)")
    for op in r.tar_at_far:
        if op.enough_pairs:
            lines.append(f"TAR {op.tar:.4f} at FAR {op.far:.4f} (target {op.target_far:g}) tau {op.tau:.3f}   "
                         f"[{op.n_same} same / {op.n_different} different pairs]")
        else:
            lines.append(f"TAR at FAR {op.target_far:g}: {op.note}")
    lines += _failure_lines(ev.failures, len(ev.skipped))
    return "\n".join(lines)


def format_identification_evaluation(ev: IdentificationEvaluation) -> str:
    r = ev.report
    lines = [
        f"model {ev.model_id}: {ev.n_splits} split(s), {r.n_known} probes of enrolled people, "
        f"{r.n_unknown} probes of strangers; gallery faces per split {list(ev.gallery_sizes)}",
        "   ".join(f"rank-{k} {v:.4f}" for k, v in sorted(r.rank_accuracy.items())),
    ]
    for d in r.dir_at_far:
        if d.tau is None:
            lines.append(f"DIR at FAR {d.target_far:g}: {d.note}")
        else:
            lines.append(f"DIR {d.dir:.4f} at FAR {d.far:.4f} (target {d.target_far:g}) tau {d.tau:.3f}")
    named = "n/a (no strangers)" if r.unknown_named_rate is None else f"{r.unknown_named_rate:.4f}"
    lines.append(
        f"at tau {r.tau:.3f}: strangers named {named}; enrolled people named correctly {r.known_correct_rate:.4f}, "
        f"wrongly {r.known_wrong_rate:.4f}, answered unknown {r.known_rejected_rate:.4f}"
    )
    lines += _failure_lines(ev.failures, None)
    return "\n".join(lines)


def _failure_lines(failures: Sequence[DetectionFailure], n_skipped: int | None) -> list[str]:
    if not failures:
        return ["detection failures: none"]
    head = f"detection failures: {len(failures)} image(s)"
    if n_skipped is not None:
        head += f", {n_skipped} pair(s) skipped"
    return [head] + [f"  {f.path}: {f.reason}" for f in failures]


def to_jsonable(value: Any) -> Any:
    """Dataclasses / numpy / paths → plain JSON types (ROC arrays included as lists)."""
    from dataclasses import fields, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value) if not f.name.startswith("_")}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    return value
