"""Photos/s of face detection on the real photos of shared/data: full resolution vs a downscaled copy, batch 1 vs 8.

Every configuration detects every photo of faces/ and faces_group/ (decoded beforehand, so decoding is not
timed; the downscale resize is) and is checked against the known counts: exactly one face per faces/ photo,
counts.csv for faces_group/. The first row is facenet-pytorch's own `MTCNN.detect`, one photo per call,
for reference. Configurations run in turn, round by round, so a noisy neighbour hurts all alike; the
median round is reported.

    uv run python bench/detection_throughput.py                      # all 86 photos, 3 rounds
    uv run python bench/detection_throughput.py --limit 24 --rounds 1 --max-sides 512,384
    uv run python bench/detection_throughput.py --larger-than 512     # only the photos downscaling shrinks
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from facenet_pytorch import MTCNN
from PIL import Image

from faceid.indexer.detection import FaceDetector
from faceid.indexer.images import decode_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedding_throughput import machine  # noqa: E402  (bench/ is a folder of scripts, not a package)

SHARED = Path(os.environ.get("FACEID_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))


@dataclass(frozen=True)
class Config:
    name: str
    detect: Callable[[list[Image.Image]], list[int]]  # photos → faces found per photo (p ≥ 0.95)
    batch: int


@dataclass(frozen=True)
class Row:
    name: str
    photos_per_s: float
    faces_found: int
    faces_expected: int
    wrong_photos: int


def load_photos(data: Path, limit: int | None, larger_than: int = 0) -> tuple[list[Image.Image], list[int]]:
    """Decoded photos (faces/ interleaved by person, then faces_group/) and the face count each should give.

    `larger_than`: keep only photos whose longer side exceeds it (the ones a downscaled detector shrinks).
    """
    people = sorted(p for p in (data / "faces").iterdir() if p.is_dir())
    per_person = [sorted(p.glob("*.jpg")) for p in people]
    faces = [files[i] for i in range(max(map(len, per_person))) for files in per_person if i < len(files)]
    with (data / "faces_group" / "counts.csv").open(newline="") as f:
        groups = [(data / "faces_group" / r["file"], int(r["faces"])) for r in csv.DictReader(f)]
    items = [(p, 1) for p in faces] + groups
    if limit:
        # keep the group photos in a short run: they are the multi-face check
        items = items[: max(0, limit - len(groups))] + groups if limit > len(groups) else items[:limit]
    decoded = [(decode_image(p.read_bytes()).image, n) for p, n in items]
    decoded = [(im, n) for im, n in decoded if max(im.size) > larger_than]
    return [im for im, _ in decoded], [n for _, n in decoded]


def ours(detector: FaceDetector) -> Callable[[list[Image.Image]], list[int]]:
    def run(images: list[Image.Image]) -> list[int]:
        found: list[int] = []
        for k in range(0, len(images), detector.batch_size):
            found += [len(d) for d in detector.detect(images[k : k + detector.batch_size])]
        return found

    return run


def bare_mtcnn(device: torch.device) -> Callable[[list[Image.Image]], list[int]]:
    mtcnn = MTCNN(keep_all=True, device=device)

    def run(images: list[Image.Image]) -> list[int]:
        counts = []
        for im in images:
            _, probs = mtcnn.detect(im)
            counts.append(0 if probs is None or probs[0] is None else int(sum(p >= 0.95 for p in probs)))
        return counts

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data")
    ap.add_argument("--limit", type=int, default=0, help="photos to use (0: all); the group photos are always kept")
    ap.add_argument("--larger-than", type=int, default=0, help="only photos whose longer side exceeds this")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-sides", default="640,512", help="detect_max_side values for the downscaled rows")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images, expected = load_photos(args.data, args.limit or None, args.larger_than)
    configs = [Config("facenet-pytorch MTCNN.detect (bare), full res", bare_mtcnn(device), 1)]
    for side in [None, *(int(s) for s in args.max_sides.split(",") if s)]:
        label = "full res" if side is None else f"max side {side}"
        for batch, batching in ((1, "size"), (8, "size"), (8, "canvas")):
            det = FaceDetector(device, detect_max_side=side, batch_size=batch, batching=batching)  # type: ignore[arg-type]
            name = f"FaceDetector, {label}, batch {batch}" + (", canvas" if batching == "canvas" else "")
            configs.append(Config(name, ours(det), batch))
    for c in configs:  # warm-up: first-call allocations and lazy inits
        c.detect(images[:2])
    times: dict[str, list[float]] = {c.name: [] for c in configs}
    counts: dict[str, list[int]] = {}
    for r in range(args.rounds):
        for c in configs:
            t0 = time.perf_counter()
            counts[c.name] = c.detect(images)
            times[c.name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: {c.name}: {len(images) / times[c.name][-1]:.2f} photos/s", file=sys.stderr)
    rows = [
        Row(c.name, len(images) / statistics.median(times[c.name]), sum(counts[c.name]), sum(expected),
            sum(got != want for got, want in zip(counts[c.name], expected, strict=True)))
        for c in configs
    ]
    sizes = sorted(im.size for im in images)
    print(f"Machine: {machine()}; device {device}.")
    print(f"{len(images)} photos from {args.data} ({sizes[0][0]}×{sizes[0][1]} … {sizes[-1][0]}×{sizes[-1][1]}), "
          f"median of {args.rounds} round(s); faces counted at p ≥ 0.95.\n")
    base = rows[0].photos_per_s
    print("| configuration | photos/s | vs bare MTCNN | faces found / expected | photos with a wrong count |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.name} | {r.photos_per_s:.2f} | {r.photos_per_s / base:.2f}× "
              f"| {r.faces_found} / {r.faces_expected} | {r.wrong_photos} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
