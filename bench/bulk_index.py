"""Issue 5: bulk indexing through the server (`faceid index`) against the bare stages, photos/s, same photos.

Bare = the data path called directly in this process, no service: read + decode (PIL), facenet-pytorch
`MTCNN.detect` on the full-resolution photo, `MTCNN.extract` of the faces at p >= 0.95, InceptionResnetV1 (the
served model's weights, prewhitened crops) on the crops, batch 8 for both networks. MTCNN batches only photos
of one size, so each run of 8 consecutive photos is detected in groups of equal size (the person folders
mostly hold photos of one source, so most groups are whole).

Served = a real `faceid-server` process on a fresh SQLite gallery, and `faceid index FOLDER --json` as a
second process: photos read from disk, streamed over EnrollStream, analysed, committed (faces, thumbnails,
audit rows) and acknowledged. Its figure is the CLI's own: photos answered / time from the first request to
the last answer (client start-up and the server's model load are not counted; both are printed).

Rounds alternate bare and served, so a noisy neighbour hurts both alike; the median round is reported.
Target: served >= 0.8 x bare; above 1.0 is the stretch (the server detects on a <= 640 px copy).

    OMP_NUM_THREADS=2 uv run python bench/bulk_index.py                    # shared/data/faces, 2 rounds
    uv run python bench/bulk_index.py --rounds 3 --threads 2 --data PATH  # PATH/<person>/*.jpg
    uv run python bench/bulk_index.py --server-threads 2 --server-slots 1  # the server as one 2-thread computation
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: an idle OpenMP team must not spin (app.py)

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from facenet_pytorch import MTCNN
from PIL import Image

from faceid.indexer.embedding import standardize
from faceid.indexer.models import ensure_model, get_model_spec, load_embedding_network

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedding_throughput import machine  # noqa: E402  (bench/ is a folder of scripts, not a package)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEID_SHARED_DIR", REPO.parent / "shared"))
os.environ.setdefault("FACEID_MODEL_DIR", str(SHARED / "models"))  # the shipped weights, as the server uses
MODEL = "facenet-20170512-128d"
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass(frozen=True)
class Run:
    photos: int
    faces: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.photos / self.seconds


# ------------------------------------------------------------------------------------------- bare stages
class BareStages:
    def __init__(self, device: torch.device, batch: int) -> None:
        spec = get_model_spec(MODEL)
        self.network = load_embedding_network(spec, ensure_model(MODEL, allow_fetch=False), device)
        self.preprocessing = spec.preprocessing
        self.mtcnn = MTCNN(image_size=spec.image_size, margin=spec.margin, keep_all=True, post_process=False, device=device)
        self.device = device
        self.batch = batch

    def run(self, paths: list[Path]) -> Run:
        start = time.perf_counter()
        crops: list[torch.Tensor] = []
        for k in range(0, len(paths), self.batch):
            images = [Image.open(p).convert("RGB") for p in paths[k : k + self.batch]]  # read + decode
            by_size: dict[tuple[int, int], list[Image.Image]] = {}
            for im in images:
                by_size.setdefault(im.size, []).append(im)
            for group in by_size.values():
                boxes, probs = self.mtcnn.detect(group)
                for im, b, p in zip(group, boxes, probs, strict=True):
                    if b is None:
                        continue
                    keep = [i for i, q in enumerate(p) if q >= 0.95]
                    if keep:
                        crops.extend(self.mtcnn.extract(im, b[keep], None))
        with torch.inference_mode():
            for k in range(0, len(crops), self.batch):
                x = torch.stack(crops[k : k + self.batch]).to(self.device).float()
                self.network(standardize(x, self.preprocessing)).cpu()
        return Run(len(paths), len(crops), time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- served
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else shutil.which(name) or name


def served_run(data: Path, threads: int, slots: int, device: str, batch: int) -> tuple[Run, dict[str, float]]:
    """Start a server on a fresh gallery, index `data` with the CLI, stop the server. (Run, extra timings).

    threads, slots: the server's accelerator sizing (0 = its default, one 1-thread slot per core)."""
    tmp = Path(tempfile.mkdtemp(prefix="faceid-bulk-bench-"))
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "FACEID_STYLE__ENABLED": "false",
           "FACEID_SCHEDULER__TORCH_THREADS": str(threads), "FACEID_SCHEDULER__SLOTS": str(slots)}
    log = (tmp / "server.log").open("wb")
    t0 = time.perf_counter()
    server = subprocess.Popen(
        [_script("faceid-server"), "--listen", address, "--database", f"sqlite:///{tmp / 'bench.db'}", "--no-fetch",
         "--device", device],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        t1 = time.perf_counter()
        done = subprocess.run(
            [_script("faceid"), "index", str(data), "--server", address, "--wait", "600", "--json",
             "--batch", str(batch), "--rejected", str(tmp / "rejected.csv")],
            capture_output=True, text=True, timeout=3600,
        )
        wall = time.perf_counter() - t1
        if done.returncode != 0:
            raise RuntimeError(f"faceid index failed ({done.returncode}): {done.stderr[-2000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    extra = {"cli_wall_s": wall, "server_start_to_end_s": time.perf_counter() - t0, "rejected": summary["rejected"]}
    return Run(summary["done"], summary["faces_found"], summary["elapsed_s"]), extra


def photos_below(data: Path) -> list[Path]:
    """The files `faceid index` sends, in its order (sorted paths below the folder)."""
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(data).parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "faces", help="folder of <person>/*.jpg")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="bare stages: torch CPU threads")
    ap.add_argument("--server-threads", type=int, default=0,
                    help="the server's torch threads per slot (0: its default, one 1-thread slot per core)")
    ap.add_argument("--server-slots", type=int, default=0, help="the server's accelerator slots (0: its default)")
    ap.add_argument("--batch", type=int, default=8, help="bare: photos and crops per batch")
    ap.add_argument("--window", type=int, default=32, help="faceid index --batch (photos in flight)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = photos_below(args.data)
    bare_stages = BareStages(torch.device(args.device), args.batch)
    bare_stages.run(paths[:4])  # warm-up: first-call allocations
    load_before = os.getloadavg()
    bare: list[Run] = []
    served: list[Run] = []
    extras: list[dict[str, float]] = []
    for r in range(args.rounds):
        bare.append(bare_stages.run(paths))
        print(f"round {r + 1}: bare {bare[-1].rate:.2f} photos/s", file=sys.stderr, flush=True)
        run, extra = served_run(args.data, args.server_threads, args.server_slots, args.device, args.window)
        served.append(run)
        extras.append(extra)
        print(f"round {r + 1}: served {run.rate:.2f} photos/s ({extra})", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    b = statistics.median(x.rate for x in bare)
    s = statistics.median(x.rate for x in served)
    print(f"Machine: {machine()}; device {args.device}.")
    print(f"Load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}.")
    print(f"{len(paths)} photos from {args.data}, median of {args.rounds} round(s).\n")
    print("| path | photos/s (median) | rounds | faces found |")
    print("|---|---:|---|---:|")
    print(f"| bare stages (decode + MTCNN full res + InceptionResnetV1, batch {args.batch}) | {b:.2f} | "
          f"{', '.join(f'{x.rate:.2f}' for x in bare)} | {bare[0].faces} |")
    print(f"| `faceid index` through `faceid-server` (window {args.window}) | {s:.2f} | "
          f"{', '.join(f'{x.rate:.2f}' for x in served)} | {served[0].faces} |")
    per_round = ", ".join(f"{x.rate / y.rate:.2f}" for x, y in zip(served, bare, strict=True))
    print(f"\nratio served / bare: {s / b:.2f} of the medians; per round {per_round} (target >= 0.8, stretch > 1.0)")
    walls = ", ".join(f"{e['cli_wall_s']:.1f}" for e in extras)
    print(f"CLI wall time incl. its start-up and the wait for the server's model load: {walls} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
