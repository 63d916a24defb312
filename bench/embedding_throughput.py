"""Issue 4, benchmark 1: the service's embedding path against a bare InceptionResnetV1 forward, images/s.

Pipeline = `Embedder.embed` on uint8 crops (n, 3, 160, 160): host→device copy, uint8→float, the card's
prewhiten, forward, L2-normalise, device→host numpy. Bare = `network(x)` on the same batch already
standardised and already on the device (torch.inference_mode), i.e. the forward alone. Both run in the same
process, interleaved round by round so that a noisy neighbour hurts both alike; the median round is reported.
Target: pipeline ≥ 0.85 × bare at every batch size.

    uv run python bench/embedding_throughput.py                       # batch 1, 8, 32, 64 on CPU or CUDA
    uv run python bench/embedding_throughput.py --batch-sizes 8,32 --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceid.indexer.detection import FaceDetector
from faceid.indexer.embedding import Embedder, standardize
from faceid.indexer.images import decode_image
from faceid.indexer.models import ensure_model, get_model_spec, load_embedding_network

SHARED = Path(os.environ.get("FACEID_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))


@dataclass(frozen=True)
class Row:
    batch: int
    pipeline: float  # images/s, median round
    bare: float

    @property
    def ratio(self) -> float:
        return self.pipeline / self.bare


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads){gpu}, Python {platform.python_version()}")


def real_crops(data_dir: Path, device: torch.device, count: int) -> np.ndarray:
    """(count, 3, 160, 160) uint8: faces of the first photo of each person, repeated to `count`."""
    detector = FaceDetector(device, detect_max_side=512)
    images = [decode_image(sorted(p.glob("*.jpg"))[0].read_bytes()).image for p in sorted(data_dir.iterdir()) if p.is_dir()]
    crops = [detector.crop(im, faces[0]) for im, faces in zip(images, detector.detect(images), strict=True) if faces]
    return np.stack([crops[i % len(crops)] for i in range(count)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(embedder: Embedder, net: torch.nn.Module, crops: np.ndarray, rounds: int, min_images: int) -> Row:
    """Interleaved rounds; each round runs enough batches for `min_images` images through each path."""
    device, batch = embedder.device, crops.shape[0]
    x = standardize(torch.from_numpy(crops).to(device).float(), embedder.preprocessing)
    reps = max(1, -(-min_images // batch))
    with torch.inference_mode():  # warm-up (allocator, cuDNN autotune, first-call overheads)
        net(x)
    embedder.embed(crops)
    pipe, bare = [], []
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            embedder.embed(crops)  # returns host numpy: already synchronised
        t1 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(reps):
                net(x)
        sync(device)
        t2 = time.perf_counter()
        pipe.append(reps * batch / (t1 - t0))
        bare.append(reps * batch / (t2 - t1))
    return Row(batch, statistics.median(pipe), statistics.median(bare))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="facenet-20170512-128d")
    ap.add_argument("--batch-sizes", default="1,8,32,64")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size (median reported)")
    ap.add_argument("--min-images", type=int, default=64, help="images per path per round")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "faces", help="photos for the crops")
    ap.add_argument("--model-dir", type=Path, default=SHARED / "models",
                    help="folder holding <model>/ (else the registry's search)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = get_model_spec(args.model)
    folder = args.model_dir / spec.name
    net = load_embedding_network(spec, folder if folder.is_dir() else ensure_model(spec.name, allow_fetch=False), device)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    crops = real_crops(args.data, device, max(sizes))
    rows = []
    for b in sizes:
        embedder = Embedder(net, spec.preprocessing, device=device, batch_size=b)
        rows.append(measure(embedder, net, crops[:b], args.rounds, args.min_images))
        print(f"batch {b}: pipeline {rows[-1].pipeline:.1f} img/s, bare {rows[-1].bare:.1f} img/s", file=sys.stderr)
    print(f"Machine: {machine()}; device {device}; model {spec.name} ({spec.preprocessing}).\n")
    print("| batch | pipeline img/s (Embedder.embed, uint8 in) | bare forward img/s | pipeline / bare |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.batch} | {r.pipeline:.1f} | {r.bare:.1f} | {r.ratio:.3f} |")
    worst = min(r.ratio for r in rows)
    print(f"\nWorst ratio {worst:.3f} (target ≥ 0.85): {'met' if worst >= 0.85 else 'NOT met'}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
