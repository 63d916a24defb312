"""A 2-D view of the embeddings for reports: PCA by SVD, computed on the server so clients need no numpy."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def pca_2d(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Project x (n, d) on its two principal axes. Returns (n, 2) float32, centred.

    Deterministic: each axis's sign is fixed so that its largest-magnitude loading is positive (an SVD
    may return either sign). Fewer than two usable axes (n < 3 or identical points) give zero columns.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    out = np.zeros((n, 2), dtype=np.float32)
    if n < 2:
        return out
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = min(2, int((s > 1e-9 * max(s[0], 1e-300)).sum()))
    for a in range(axes):
        v = vt[a]
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        out[:, a] = centred @ v
    return out
