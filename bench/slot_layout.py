"""How to spend the CPU cores: one computation on every core, or several 1-thread computations at once?

The server's accelerator has slots (server/scheduler.py); this measures the choice behind its default, in
one process without gRPC: `workers` threads each run the engine's own detect + embed (`FacePipeline`) on
batches of `batch` photos of shared/data/faces, with torch sized to `threads` per computation. Prints
photos/s and the p50 latency of one batch, one line per layout.

    uv run python bench/slot_layout.py                          # the layouts of docs/benchmarks.md
    uv run python bench/slot_layout.py --layout 2x1 --batch 4   # threads x workers
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SHARED = Path(os.environ.get("FACEID_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))
LAYOUTS = ("2x1:1", "1x1:1", "1x2:1", "2x1:4", "1x2:4")  # threads x workers : batch


def measure(threads: int, workers: int, batch: int, photos: int, repeats: int) -> str:
    """One layout in this process (torch's thread count is set once per process)."""
    os.environ.setdefault("FACEID_MODEL_DIR", str(SHARED / "models"))
    from faceid.indexer.config import EngineConfig
    from faceid.indexer.engine import FaceEngine
    from faceid.indexer.runtime import configure_torch_threads

    configure_torch_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        engine = FaceEngine.open(EngineConfig(database_url=f"sqlite:///{tmp}/slots.db", device="cpu"))
        pipeline = engine.pipeline
        paths = sorted((SHARED / "data" / "faces").glob("*/*.jpg"))[:photos]
        decoded = [pipeline.decode(p.read_bytes()) for p in paths]
        pipeline._analyze_now(decoded[:2], True, False)  # warm-up: first-call allocations
        total = len(decoded) * repeats
        lock = threading.Lock()
        next_index = 0
        latencies: list[float] = []

        def work() -> None:
            nonlocal next_index
            while True:
                with lock:
                    start = next_index
                    next_index += batch
                if start >= total:
                    return
                items = [decoded[(start + k) % len(decoded)] for k in range(batch)]
                t = time.perf_counter()
                pipeline._analyze_now(items, True, False)
                with lock:
                    latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        pool = [threading.Thread(target=work) for _ in range(workers)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - t0
        engine.close()
    return (f"| {workers} computation(s) x {threads} torch thread(s), batch {batch} | {total / elapsed:.2f} | "
            f"{statistics.median(latencies) * 1000:.0f} ms |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layout", action="append", help="THREADSxWORKERS[:BATCH], repeatable (default: a set)")
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one layout in this process
    args = ap.parse_args(argv)
    if args.one:
        threads, workers, batch = (int(v) for v in args.one.split(","))
        print(measure(threads, workers, batch, args.photos, args.repeats), flush=True)
        return 0
    print(f"{os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.2f}")
    print("| layout | photos/s | batch latency p50 |\n|---|---:|---:|")
    for layout in args.layout or LAYOUTS:
        shape, _, batch = layout.partition(":")
        threads, workers = shape.split("x")
        # a fresh process per layout: torch's thread pool cannot be resized once it has run
        subprocess.run([sys.executable, __file__, "--one", f"{threads},{workers},{batch or 1}",
                        "--photos", str(args.photos), "--repeats", str(args.repeats)], check=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
