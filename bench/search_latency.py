"""Identify search latency: the project's VectorIndex against a bare faiss.IndexFlatIP, same data, same run.

Issue 4, benchmark 2: a synthetic gallery of 1,000,000 × 128-d L2-normalised float32 vectors; latency of one
query and of a batch of 64 through `VectorIndex.search` (input checks, lock, id map, L2 conversion, padding)
vs the bare FAISS flat inner-product search. Target: overhead ≤ 10 %. The two are timed alternately, run by
run, so that load from other processes hits both alike; medians are reported.

    uv run python bench/search_latency.py                      # the full benchmark
    uv run python bench/search_latency.py --n 100000 --repeats 5   # a quick check
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

from faceid.indexer.vector_index import VectorIndex


@dataclass(frozen=True)
class Timing:
    label: str
    bare_ms: float
    ours_ms: float

    @property
    def overhead(self) -> float:
        return self.ours_ms / self.bare_ms - 1.0


def synthetic_gallery(n: int, dim: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32, rows L2-normalised, generated in chunks to keep temporaries small."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start : start + len(block)] = block
    return x


def noisy_queries(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries near random gallery rows (like a second photo of an enrolled person), normalised."""
    rng = np.random.default_rng(seed + 1)
    q = x[rng.integers(0, len(x), count)] + 0.05 * rng.standard_normal((count, x.shape[1]), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def time_pair(
    bare: Callable[[np.ndarray], object], ours: Callable[[np.ndarray], object], batches: list[np.ndarray]
) -> tuple[float, float]:
    """Median ms of each function over `batches`, alternating which one goes first."""
    t_bare, t_ours = [], []
    for i, q in enumerate(batches):
        order = [(bare, t_bare), (ours, t_ours)]
        if i % 2:
            order.reverse()
        for fn, sink in order:
            start = time.perf_counter()
            fn(q)
            sink.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(t_bare), statistics.median(t_ours)


def machine_info(index: VectorIndex) -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; FAISS threads: {faiss.omp_get_max_threads()}",
        f"- load average at the end: {load:.2f} (other processes share the machine when > 0)",
        f"- index device: {index.device}; FAISS {faiss.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery size (default 1,000,000)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=21, help="timed single-query runs per implementation")
    parser.add_argument("--batch-repeats", type=int, default=7, help="timed batch runs per implementation")
    parser.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0 = FAISS default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    t0 = time.perf_counter()
    x = synthetic_gallery(args.n, args.dim, args.seed)
    ours = VectorIndex(args.dim, f"synthetic-{args.dim}d")
    ours.add(np.arange(args.n, dtype=np.int64), x)
    bare = faiss.IndexFlatIP(args.dim)
    if ours.use_gpu:  # compare like with like: the bare index on the same device
        bare = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), ours.gpu_device, bare)
    bare.add(x)
    queries = noisy_queries(x, args.batch * (args.batch_repeats + 1) + args.repeats + 1, args.seed)
    # The wrapper's fixed cost per call, where FAISS itself costs almost nothing: robust to machine load.
    small_ours = VectorIndex(args.dim, "small")
    small_ours.add(np.arange(1000, dtype=np.int64), x[:1000])
    small_bare = faiss.IndexFlatIP(args.dim)
    small_bare.add(x[:1000])
    del x
    print(f"built two indexes of {args.n:,} × {args.dim} in {time.perf_counter() - t0:.1f} s")

    # Same answers (ids) from both, checked on one batch; also the warm-up run.
    _, bare_ids = bare.search(queries[: args.batch], args.k)
    _, our_ids = ours.search(queries[: args.batch], args.k)
    if not np.array_equal(bare_ids, our_ids):
        raise SystemExit("VectorIndex and bare FAISS disagree on the neighbours: the benchmark is void")

    def bare_search(q: np.ndarray) -> object:
        return bare.search(q, args.k)

    def our_search(q: np.ndarray) -> object:
        return ours.search(q, args.k)

    rest = queries[args.batch :]
    singles = [rest[i : i + 1] for i in range(args.repeats)]
    rest = rest[args.repeats :]
    batches = [rest[i * args.batch : (i + 1) * args.batch] for i in range(args.batch_repeats)]
    timings = [
        Timing("1 query", *time_pair(bare_search, our_search, singles)),
        Timing(f"batch of {args.batch}", *time_pair(bare_search, our_search, batches)),
    ]

    small_singles = [queries[i : i + 1] for i in range(200)]
    small_bare_ms, small_ours_ms = time_pair(
        lambda q: small_bare.search(q, args.k), lambda q: small_ours.search(q, args.k), small_singles
    )

    print()
    print(f"### Search latency, {args.n:,} × {args.dim}-d, k = {args.k} (median ms)")
    print()
    print("| query | bare faiss.IndexFlatIP | faceid VectorIndex | overhead |")
    print("|---|---:|---:|---:|")
    for t in timings:
        per_q = f" ({t.ours_ms / args.batch:.2f} per query)" if t.label.startswith("batch") else ""
        print(f"| {t.label} | {t.bare_ms:.2f} | {t.ours_ms:.2f}{per_q} | {t.overhead * 100:+.1f} % |")
    print(
        f"| 1 query, 1,000-row index (fixed cost per call) | {small_bare_ms * 1000:.0f} µs | "
        f"{small_ours_ms * 1000:.0f} µs | {(small_ours_ms - small_bare_ms) * 1000:+.0f} µs |"
    )
    print()
    print(f"runs: {args.repeats} single, {args.batch_repeats} batches, 200 small, alternating order")
    print("\n".join(machine_info(ours)))
    worst = max(t.overhead for t in timings)
    print(f"\noverhead target ≤ 10 %: {'met' if worst <= 0.10 else 'NOT met'} (worst {worst * 100:+.1f} %)")


if __name__ == "__main__":
    main()
