"""Spherical K-means benchmark: faceid's seeding + FAISS against scikit-learn, in one run.

    uv run python bench/kmeans_bench.py                    # 100,000 × 128, K = 1,000, 20 iterations
    uv run python bench/kmeans_bench.py --n 20000 --k 200  # a quick look

Data: `spherical_blobs` (K centres uniform on the sphere, von Mises–Fisher-like caps, log-normal sizes).
Every method gets the same data, K and maximum iterations, and is scored the same way: its centroids
are scaled to unit length and the spherical inertia Σ min_c ‖x − c‖² is computed over all points
(`spherical_inertia`), so scikit-learn's Euclidean centroids are not penalised for their length.
Methods run interleaved `--repeat` times (the machine may be shared: interleaving spreads the noise
over all of them); the table shows the median time. Prints a markdown table and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import sklearn
from numpy.typing import NDArray
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from faceid.indexer.clustering import spherical_blobs, spherical_inertia, spherical_kmeans
from faceid.indexer.clustering.backend import gpu_available

Fit = Callable[[NDArray[np.float32], int, int, int], tuple[NDArray[np.float32], int]]  # -> centroids, iters


@dataclass
class Row:
    name: str
    seconds: list[float]
    inertia: float = float("nan")
    nmi: float = float("nan")
    iterations: int = 0


def sklearn_fit(init: str) -> Fit:
    def fit(x: NDArray[np.float32], k: int, niter: int, seed: int) -> tuple[NDArray[np.float32], int]:
        # scikit-learn's defaults except max_iter; n_init=1 for "random" (its default there is 10 runs).
        km = KMeans(
            n_clusters=k, init=init, max_iter=niter, random_state=seed, n_init=1 if init == "random" else "auto"
        )
        km.fit(x)
        return km.cluster_centers_.astype(np.float32), int(km.n_iter_)

    return fit


def faiss_fit(init_method: int | None) -> Fit:
    def fit(x: NDArray[np.float32], k: int, niter: int, seed: int) -> tuple[NDArray[np.float32], int]:
        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=niter,
            seed=seed,
            spherical=True,
            gpu=gpu_available(),
            min_points_per_centroid=1,
            max_points_per_centroid=x.shape[0],
        )
        if init_method is not None:
            km.cp.init_method = init_method
        km.train(x)
        return km.centroids, niter

    return fit


def ours_fit(x: NDArray[np.float32], k: int, niter: int, seed: int) -> tuple[NDArray[np.float32], int]:
    result = spherical_kmeans(x, k, seed=seed, niter=niter)
    return result.centroids, result.iterations


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"{cpu}; {os.cpu_count()} logical CPUs; load average {load[0]:.2f} at the end; "
        f"GPU for FAISS: {'yes' if gpu_available() else 'no'}; python {platform.python_version()}, "
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, faiss {faiss.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip", nargs="*", default=[], help="names of methods to leave out")
    args = parser.parse_args()

    blobs = spherical_blobs(args.n, args.d, args.k, seed=args.seed)
    x = blobs.x
    methods: dict[str, Fit] = {
        "faceid (k-means‖ + greedy k-means++ seeding, FAISS Lloyd)": ours_fit,
        "scikit-learn KMeans, k-means++ (default)": sklearn_fit("k-means++"),
        "FAISS Kmeans, random init": faiss_fit(None),
        "scikit-learn KMeans, random init (n_init=1)": sklearn_fit("random"),
        "FAISS Kmeans, built-in k-means++ init": faiss_fit(faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS),
    }
    methods = {name: fit for name, fit in methods.items() if not any(s in name for s in args.skip)}
    rows = {name: Row(name, []) for name in methods}
    for _ in range(args.repeat):
        for name, fit in methods.items():
            start = time.perf_counter()
            centroids, iters = fit(x, args.k, args.niter, args.seed)
            rows[name].seconds.append(time.perf_counter() - start)
            assign = np.argmax(x @ (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).T, axis=1)
            rows[name].inertia = spherical_inertia(x, centroids)
            rows[name].nmi = normalized_mutual_info_score(blobs.labels, assign)
            rows[name].iterations = iters
            print(f"  {name}: {rows[name].seconds[-1]:.2f} s, inertia {rows[name].inertia:.1f}", flush=True)

    ref_name = next((n for n in rows if n.startswith("scikit-learn KMeans, k-means++")), None)
    ref = rows[ref_name] if ref_name else None
    print(
        f"\n{args.n:,} × {args.d} synthetic embeddings, K = {args.k:,}, max {args.niter} iterations, seed {args.seed}; "
        f"inertia at the true centres {spherical_inertia(x, blobs.centres):.1f}\n"
    )
    print(
        "| method | time (s) | iterations run | spherical inertia | inertia / sklearn k-means++ | "
        "speed-up vs sklearn k-means++ | NMI vs truth |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows.values():
        t = statistics.median(row.seconds)
        ratio = f"{row.inertia / ref.inertia:.4f}" if ref else "–"
        speed = f"{statistics.median(ref.seconds) / t:.1f}×" if ref else "–"
        print(f"| {row.name} | {t:.2f} | {row.iterations} | {row.inertia:.1f} | {ratio} | {speed} | {row.nmi:.4f} |")
    print(f"\nMachine: {machine()}")


if __name__ == "__main__":
    main()
