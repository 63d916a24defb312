"""Vector backends side by side: FAISS in-process vs Milvus (a local Milvus Lite server), same gallery, same queries.

A synthetic gallery of N × 128-d L2-normalised float32 vectors (default 100,000) is loaded into
`VectorIndex` (FAISS) and `MilvusIndex` (a `milvus-lite` gRPC server started here on a free port, data in a
temp dir). Timed, as the engine calls them: the load (`add`, Milvus in upserts of 5,000 rows), `search` of
one query and of 64 (k = 32, the engine's first search depth), `len` (one per Identify) and `checksum` (the
consistency check: every id). Searches are timed alternately, FAISS then Milvus, so that load from other
processes hits both alike; medians (and p95 of single queries) are reported, plus the agreement of answers:
top-1 equal and the largest distance difference.

    uv run python bench/vector_backends.py                  # 100k, 200 single queries, 20 batches
    uv run python bench/vector_backends.py --n 20000 --queries 50
    uv run python bench/vector_backends.py --uri http://milvus:19530   # a Milvus server of your own instead
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from faceid.indexer import errors
from faceid.indexer.milvus_index import MilvusIndex
from faceid.indexer.vector_index import VectorIndex

MODEL = "bench-synthetic-128d"
DIM = 128


def synthetic(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries near random gallery rows (a second photo of an enrolled person), normalised."""
    rng = np.random.default_rng(seed + 1)
    q = x[rng.integers(0, len(x), count)] + 0.05 * rng.standard_normal((count, DIM), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def start_milvus_lite(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_until_up(index: MilvusIndex, timeout: float = 120) -> float:
    t0 = time.perf_counter()
    while True:
        try:
            index.ping()
            return time.perf_counter() - t0
        except errors.Unavailable:
            if time.perf_counter() - t0 > timeout:
                raise
            time.sleep(0.2)


def ms(seconds: list[float], q: float = 0.5) -> float:
    return 1000 * (statistics.median(seconds) if q == 0.5 else float(np.quantile(seconds, q)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200, help="single-query searches")
    ap.add_argument("--batches", type=int, default=20, help="searches of 64 queries")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--uri", default=None, help="an existing Milvus server (default: start milvus-lite here)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    x = synthetic(args.n, args.seed)
    ids = np.arange(args.n, dtype=np.int64) * 3 + 1  # sparse ids, as face ids after deletions
    singles = near(x, args.queries, args.seed)
    batches = [near(x, 64, args.seed + 100 + i) for i in range(args.batches)]

    proc = None
    tmp = tempfile.TemporaryDirectory(prefix="faceid-bench-milvus-")
    uri = args.uri
    if uri is None:
        proc, uri = start_milvus_lite(Path(tmp.name))
    milvus = MilvusIndex(DIM, MODEL, uri=uri, timeout_s=120)
    try:
        up = wait_until_up(milvus)
        if len(milvus):
            milvus.remove(milvus.ids())
        faiss_index = VectorIndex(DIM, MODEL, use_gpu=False)

        t0 = time.perf_counter()
        faiss_index.add(ids, x)
        load_faiss = time.perf_counter() - t0
        t0 = time.perf_counter()
        milvus.add(ids, x)
        load_milvus = time.perf_counter() - t0

        milvus.search(singles[:1], args.k)  # first search: the server loads its segment indexes
        single_f, single_m, agree, max_dd = [], [], 0, 0.0
        for q in singles:
            q1 = q[None, :]
            t0 = time.perf_counter()
            d_f, i_f = faiss_index.search(q1, args.k)
            t1 = time.perf_counter()
            d_m, i_m = milvus.search(q1, args.k)
            t2 = time.perf_counter()
            single_f.append(t1 - t0)
            single_m.append(t2 - t1)
            agree += int(i_f[0, 0] == i_m[0, 0])
            max_dd = max(max_dd, float(np.abs(d_f - d_m).max()))
        batch_f, batch_m = [], []
        for b in batches:
            t0 = time.perf_counter()
            faiss_index.search(b, args.k)
            t1 = time.perf_counter()
            milvus.search(b, args.k)
            batch_m.append(time.perf_counter() - t1)
            batch_f.append(t1 - t0)
        len_m = []
        for _ in range(20):
            t0 = time.perf_counter()
            assert len(milvus) == args.n
            len_m.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sum_f = faiss_index.checksum()
        checksum_f = time.perf_counter() - t0
        t0 = time.perf_counter()
        sum_m = milvus.checksum()
        checksum_m = time.perf_counter() - t0
        assert sum_f == sum_m, (sum_f, sum_m)
    finally:
        milvus.close()
        if proc is not None:
            proc.terminate()
            proc.wait()
        tmp.cleanup()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
          f"python {platform.python_version()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"gallery: {args.n:,} x {DIM}-d, k={args.k}; Milvus: {'milvus-lite (local gRPC server)' if args.uri is None else uri}, "
          f"up in {up:.1f} s")
    print(f"{'':28s}{'FAISS':>12s}{'Milvus':>12s}")
    print(f"{'load (add all)':28s}{load_faiss:11.2f}s{load_milvus:11.2f}s")
    print(f"{'search 1 query, median':28s}{ms(single_f):10.2f}ms{ms(single_m):10.2f}ms")
    print(f"{'search 1 query, p95':28s}{ms(single_f, 0.95):10.2f}ms{ms(single_m, 0.95):10.2f}ms")
    print(f"{'search 64 queries, median':28s}{ms(batch_f):10.2f}ms{ms(batch_m):10.2f}ms")
    print(f"{'len (count), median':28s}{'-':>12s}{ms(len_m):10.2f}ms")
    print(f"{'checksum (all ids)':28s}{1000 * checksum_f:10.1f}ms{1000 * checksum_m:10.1f}ms")
    print(f"answers: top-1 equal for {agree}/{len(singles)} queries, max |distance difference| {max_dd:.2e}")


if __name__ == "__main__":
    main()
