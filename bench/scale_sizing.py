"""Sizing figures for docs/scale-out.md: memory and query latency of FAISS flat vs IVF on a synthetic 1 M gallery.

Measured on this machine, one process:
- flat: `IndexIDMap2(IndexFlatIP)`, exactly what each faceid-server replica holds (faceid.indexer.vector_index);
- IVF-PQ (`IVF{nlist},PQ{m}np`, inner product, no polysemous training) and IVF-Flat (`IVF{nlist},Flat`):
  candidates for 10 M+ galleries; recall against the flat index's exact answers: id-R@1 = the best match
  belongs to the same identity as the exact best match (what Identify names), 10-R@10 = share of the exact
  top-10 faces found in the top-10.
- memory: bytes the index holds on the C heap (glibc mallinfo2: in-use + mmapped, before vs after the
  build; resident-set deltas lie when freed pages are reused), and the serialized size (vectors and ids
  without the id hash map of IDMap2).
Then it extrapolates to 10 M and 100 M faces, printed in a separate table marked as extrapolation.

The gallery is synthetic but shaped like face embeddings: `n / faces_per_id` identities, each a random unit
centre, each face = centre + Gaussian noise (σ per dimension), normalised; queries are new noisy samples of
random identities (another photo of an enrolled person). Uniformly spread centres are a hard case for IVF
(real embeddings cluster more), so IVF recall here is rather pessimistic; measure on real embeddings before
fixing nprobe.

    uv run python bench/scale_sizing.py                      # 1 M x 128, 1 thread (~5-10 min on 2 cores)
    uv run python bench/scale_sizing.py --n 200000 --nlist 1024 --queries 100   # a quick check
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

SCALES = (10_000_000, 100_000_000)


# ------------------------------------------------------------------------------------------- data
def gallery(n: int, dim: int, faces_per_id: int, sigma: float, seed: int, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 unit rows and (n_ids, dim) identity centres; face i belongs to identity i // faces_per_id."""
    rng = np.random.default_rng(seed)
    n_ids = -(-n // faces_per_id)
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = centres[np.arange(start, stop) // faces_per_id] + sigma * rng.standard_normal((stop - start, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start:stop] = block
    return x, centres


def queries(centres: np.ndarray, count: int, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    q = centres[rng.integers(0, len(centres), count)] + sigma * rng.standard_normal((count, centres.shape[1]), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------- helpers
class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_bytes() -> int:
    """Bytes allocated by malloc now (arena in use + mmapped blocks): numpy and FAISS allocate through it."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def median_ms(fn: Callable[[np.ndarray], object], batches: list[np.ndarray]) -> float:
    times = []
    for q in batches:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def recall(found: np.ndarray, exact: np.ndarray, faces_per_id: int) -> tuple[float, float]:
    """(id-R@1: best match of the same identity as the exact one, 10-R@10: share of the exact top-10 found)."""
    r1 = float(np.mean(found[:, 0] // faces_per_id == exact[:, 0] // faces_per_id))
    k = exact.shape[1]
    r10 = float(np.mean([len(set(f[:k]) & set(e)) / k for f, e in zip(found, exact, strict=True)]))
    return r1, r10


@dataclass(frozen=True)
class Row:
    index: str
    setting: str
    heap_mb: float
    serialized_mb: float
    build_s: float
    one_ms: float
    batch_ms: float  # per query, in batches of 64
    r1: float
    r10: float


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--faces-per-id", type=int, default=5)
    ap.add_argument("--sigma", type=float, default=0.055,
                    help="per-dimension noise; 0.055 at 128-d: two faces of one person at cosine ≈ 0.72 (L2 ≈ 0.75)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--pq-m", type=int, default=32, help="PQ sub-quantizers (bytes per vector)")
    ap.add_argument("--nprobes", default="8,16,32,64,128")
    ap.add_argument("--train", type=int, default=200_000, help="training sample for the IVF centroids")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-ivf-flat", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    nprobes = [int(p) for p in args.nprobes.split(",")]

    t0 = time.perf_counter()
    x, centres = gallery(args.n, args.dim, args.faces_per_id, args.sigma, args.seed)
    q = queries(centres, args.queries, args.sigma, args.seed)
    del centres
    gen_s = time.perf_counter() - t0
    singles = [q[i : i + 1] for i in range(min(21, len(q)))]
    batches = [q[i : i + 64] for i in range(0, len(q) - 63, 64)][:3]
    k = 10
    ids = np.arange(args.n, dtype=np.int64)
    rows: list[Row] = []

    # --- flat, as the server holds it
    gc.collect()
    before = heap_bytes()
    t0 = time.perf_counter()
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(args.dim))
    flat.add_with_ids(x, ids)
    build = time.perf_counter() - t0
    flat_rss = heap_bytes() - before
    flat_ser = faiss.serialize_index(flat).nbytes
    one = median_ms(lambda b: flat.search(b, k), singles)
    batch = median_ms(lambda b: flat.search(b, k), batches) / 64
    _, exact = flat.search(q, k)
    rows.append(Row("flat (IDMap2+FlatIP)", "exact", flat_rss / 2**20, flat_ser / 2**20, build, one, batch, 1.0, 1.0))
    # The flat index copied x; the copy in `x` stays for training and adding the IVF indexes.

    # --- IVF indexes: train on a sample, add everything, sweep nprobe
    specs = [(f"IVF{args.nlist},PQ{args.pq_m}np", "IVF-PQ")]
    if not args.skip_ivf_flat:
        specs.append((f"IVF{args.nlist},Flat", "IVF-Flat"))
    train = x[np.random.default_rng(args.seed + 2).choice(args.n, min(args.train, args.n), replace=False)]
    ivf_models: dict[str, tuple[float, float]] = {}
    for factory, label in specs:
        gc.collect()
        before = heap_bytes()
        t0 = time.perf_counter()
        index = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
        index.train(train)
        index.add_with_ids(x, ids)
        build = time.perf_counter() - t0
        rss = heap_bytes() - before
        ser = faiss.serialize_index(index).nbytes
        ivf = faiss.extract_index_ivf(index)
        for nprobe in nprobes:
            ivf.nprobe = nprobe
            one = median_ms(lambda b: index.search(b, k), singles)
            batch = median_ms(lambda b: index.search(b, k), batches) / 64
            _, found = index.search(q, k)
            r1, r10 = recall(found, exact, args.faces_per_id)
            rows.append(Row(label, f"nlist {args.nlist}, nprobe {nprobe}", rss / 2**20, ser / 2**20, build, one, batch, r1, r10))
        ivf_models[label] = (rss / args.n, ser / args.n)
        del index, ivf
    del flat

    print(f"## Sizing measurements: {args.n:,} x {args.dim} synthetic faces ({args.n // args.faces_per_id:,} identities)\n")
    print(f"`uv run python bench/scale_sizing.py --n {args.n} --dim {args.dim} --nlist {args.nlist} --pq-m {args.pq_m} "
          f"--threads {args.threads}` — {_machine()}; FAISS {faiss.__version__}, {args.threads} thread(s); "
          f"{len(q)} queries, k = {k}; data generated in {gen_s:.0f} s; load average {os.getloadavg()[0]:.1f}\n")
    print("| index | setting | heap MB | serialized MB | build s | 1 query ms | per query in 64s ms | id-R@1 | 10-R@10 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.index} | {r.setting} | {r.heap_mb:,.0f} | {r.serialized_mb:,.0f} | {r.build_s:.1f} | {r.one_ms:.2f} | "
              f"{r.batch_ms:.2f} | {r.r1:.3f} | {r.r10:.3f} |")

    # --- extrapolation (labelled as such): memory ∝ n; flat scan ∝ n; IVF scan ∝ n at the same share of lists probed
    flat_row = rows[0]
    print("\n## EXTRAPOLATED from the measurements above (not measured)\n")
    print("Memory per replica ∝ faces (bytes per face measured above, the IVF centroids are negligible). Exact (flat)"
          " search time ∝ faces (a memory-bandwidth-bound scan). IVF: probing the same SHARE of lists (nlist grown"
          " with the gallery, nprobe with it) keeps recall about the same and scans ∝ faces too; at a fixed nprobe"
          " with nlist grown ~√n, the scan grows only ~√n, but recall must then be measured again.\n")
    print("| faces | index | memory per replica GB (steady) | during a rebuild GB (2x) | 1 query ms (1 thread) |")
    print("|---:|---|---:|---:|---:|")
    per_face_flat = flat_row.heap_mb * 2**20 / args.n
    for n in SCALES:
        scale = n / args.n
        print(f"| {n:,} | flat | {per_face_flat * n / 1e9:,.1f} | {2 * per_face_flat * n / 1e9:,.1f} | {flat_row.one_ms * scale:,.0f} |")
        for label, (heap_per_face, _) in ivf_models.items():
            sweep = [r for r in rows if r.index == label]
            # The smallest nprobe whose best match is the exact one's identity for >= 95 % of queries.
            chosen = next((r for r in sweep if r.r1 >= 0.95), sweep[-1])
            print(f"| {n:,} | {label} ({chosen.setting}, same share of lists; id-R@1 {chosen.r1:.2f} at {args.n:,}) | "
                  f"{heap_per_face * n / 1e9:,.1f} | {2 * heap_per_face * n / 1e9:,.1f} | {chosen.one_ms * scale:,.1f} |")

def _machine() -> str:
    cpu = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB"


if __name__ == "__main__":
    main()
