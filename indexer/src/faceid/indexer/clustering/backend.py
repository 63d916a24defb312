"""The two heavy operations of spherical K-means, on FAISS: nearest centre of every point, and Lloyd.

Everything else in the clustering package is cheap numpy on top of these. `FaissBackend` runs them on
the CPU (BLAS) or, when a GPU build of FAISS sees a device, on the GPU; both give the same answers up to
float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
from numpy.typing import NDArray


def gpu_available() -> bool:
    """True when the installed FAISS is a GPU build and sees at least one device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclass
class FaissBackend:
    """Nearest-centre search and Lloyd iterations for unit vectors (inner product = cosine)."""

    use_gpu: bool = False

    def __post_init__(self) -> None:
        if self.use_gpu and not gpu_available():
            raise RuntimeError(
                "use_gpu=True but FAISS sees no GPU: install the faiss-gpu build "
                "(uv sync --no-group faiss-cpu --group faiss-gpu) on a machine with an NVIDIA device"
            )
        self._resources = faiss.StandardGpuResources() if self.use_gpu else None

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu else "cpu"

    def nearest(
        self, x: NDArray[np.float32], centres: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Most similar centre of each point.

        x: (n, d) float32; centres: (m, d) float32, both unit rows.
        Returns (similarity (n,) float32 = cosine, index (n,) int64 into centres).
        """
        if self._resources is not None:
            sim, idx = faiss.knn_gpu(self._resources, x, centres, 1, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            sim, idx = faiss.knn(x, centres, 1, metric=faiss.METRIC_INNER_PRODUCT)
        return sim[:, 0], idx[:, 0]

    def lloyd(self, x: NDArray[np.float32], init: NDArray[np.float32], *, niter: int, seed: int) -> NDArray[np.float32]:
        """`niter` spherical Lloyd iterations from the given centres.

        x: (n, d) float32 unit rows; init: (k, d) float32 unit rows.
        Returns the final centres, (k, d) float32, unit rows. FAISS re-seeds an empty cluster by
        splitting a large one (`seed` drives that choice), so every centre ends up used.
        """
        n, d = x.shape
        k = init.shape[0]
        cp = faiss.ClusteringParameters()
        cp.niter = niter
        cp.spherical = True
        cp.seed = seed
        cp.verbose = False
        cp.min_points_per_centroid = 1  # small galleries are legitimate input: no warning on stderr
        cp.max_points_per_centroid = max(n // k + 1, 256)  # never subsample: the caller chose x
        clus = faiss.Clustering(d, k, cp)
        # Centres present before train() are FAISS's starting point instead of its random sample.
        faiss.copy_array_to_vector(np.ascontiguousarray(init, dtype=np.float32).ravel(), clus.centroids)
        index = self._flat_index(d)
        clus.train(x, index)
        centres = faiss.vector_to_array(clus.centroids).reshape(k, d)
        return _unit_rows(centres)

    def _flat_index(self, d: int) -> faiss.Index:
        # L2 on unit vectors ranks exactly like inner product, and it is what FAISS's Lloyd expects.
        if self._resources is not None:
            return faiss.GpuIndexFlatL2(self._resources, d)
        return faiss.IndexFlatL2(d)


def _unit_rows(a: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.ascontiguousarray(a / np.maximum(norms, 1e-12), dtype=np.float32)
