"""Embeddings of image files, with the files whose face was not found kept apart (never dropped silently)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from faceid.indexer.evaluation.pairs import ImagePair


@dataclass(frozen=True)
class DetectionFailure:
    """An image that gave no embedding, and why (no face, unreadable file, face too small...)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class EmbeddedImages:
    """`vectors` (n, d) float32, L2-normalised, row i belongs to `paths[i]`; `failures` are the images left out."""

    model_id: str
    paths: tuple[Path, ...]
    vectors: NDArray[np.float32]
    failures: tuple[DetectionFailure, ...] = ()
    _row: dict[Path, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.vectors.shape[0] != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {self.vectors.shape[0]} vectors")
        self._row.update({Path(p): i for i, p in enumerate(self.paths)})

    def row(self, path: Path) -> int | None:
        return self._row.get(Path(path))

    def rows(self, paths: Sequence[Path]) -> NDArray[np.int64]:
        """Row of each path; raises KeyError naming the first path that has no embedding."""
        out = np.empty(len(paths), dtype=np.int64)
        for i, p in enumerate(paths):
            r = self._row.get(Path(p))
            if r is None:
                raise KeyError(f"{p} has no embedding")
            out[i] = r
        return out


@dataclass(frozen=True)
class PairDistances:
    """Distances of the pairs whose two images were both embedded; `skipped` lists the others.

    distances (n,) float64, same (n,) bool, folds (n,) int64 or None when no pair carries a fold.
    """

    pairs: tuple[ImagePair, ...]
    distances: NDArray[np.float64]
    same: NDArray[np.bool_]
    folds: NDArray[np.int64] | None
    skipped: tuple[ImagePair, ...]


def pair_distances(pairs: Sequence[ImagePair], images: EmbeddedImages) -> PairDistances:
    """L2 distance between the embeddings of each pair; pairs touching a failed image go to `skipped`."""
    kept = [p for p in pairs if images.row(p.a) is not None and images.row(p.b) is not None]
    skipped = tuple(p for p in pairs if images.row(p.a) is None or images.row(p.b) is None)
    a = images.vectors[images.rows([p.a for p in kept])].astype(np.float64)
    b = images.vectors[images.rows([p.b for p in kept])].astype(np.float64)
    folds = None
    if kept and all(p.fold is not None for p in kept):
        folds = np.array([p.fold for p in kept], dtype=np.int64)
    return PairDistances(
        tuple(kept),
        np.linalg.norm(a - b, axis=1) if kept else np.zeros(0),
        np.array([p.same for p in kept], dtype=bool),
        folds,
        skipped,
    )
