"""Style transfer quality, speed and memory, measured (issue 6; numbers go to docs/style.md).

    uv run python bench/style_quality.py                      # astronaut x Starry Night, 256 px and 512 px
    uv run python bench/style_quality.py --steps 200 --timing-steps 10 --threads 2 --json out.json

What it measures, for `optimize` (Gatys, L-BFGS) and `fast` (Magenta arbitrary style):
- quality at `--quality-size` (256): judge (VGG-19) style and content losses of the output, against the two
  references: the untouched photo (content 0, style S0) and the painting cropped to the output (content C_paint).
  Pass: optimize's style loss <= 10 % of S0 and its content loss < C_paint; fast's style loss between.
- time per image at each size: `fast` warm (median of 3 runs); `optimize` from a run of `--timing-steps`
  steps, extrapolated linearly to `--steps` steps (the per-step cost is constant, so only the setup is not
  scaled), unless --full-timing runs all the steps.
- peak memory per (method, size), each in a fresh child process: CPU = peak RSS minus the RSS after the models
  loaded (working memory); CUDA = torch.cuda.max_memory_allocated.

The machine the numbers come from matters (these 2-core CPUs are shared): the JSON records the device and threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from faceid.server.style import gatys
from faceid.server.style.fast import ArbitraryStyle, FastOptions
from faceid.server.style.images import Pixels, decode, encode_png, fit_long_side
from faceid.server.style.judge import Judge, Scores
from faceid.server.style.vgg19 import load_vgg19

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEID_SHARED_DIR", REPO.parent / "shared"))
MODELS = Path(os.environ.get("FACEID_MODEL_DIR", SHARED / "models"))
STYLE_DATA = SHARED / "data" / "style"


@dataclass
class Quality:
    size: int
    photo: Scores
    painting: Scores
    optimize: Scores
    fast: Scores
    optimize_style_drop: float  # 1 - S_optimize / S_photo
    optimize_seconds: float
    steps: int
    passes: bool


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS), so the peak below excludes model loading.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(name: str, folder: str) -> Pixels:
    return decode((STYLE_DATA / folder / name).read_bytes())


def quality(args: argparse.Namespace, device: str, content: Pixels, painting: Pixels) -> Quality:
    vgg = load_vgg19(MODELS / "vgg19", device)
    fast = ArbitraryStyle.load(MODELS / "style", device)
    judge = Judge(vgg)
    size = args.quality_size
    h, w = fit_long_side(*content.shape[:2], size)
    start = time.perf_counter()
    opt = gatys.stylize(content, [gatys.StyleSource(painting)], gatys.GatysOptions(size=size, steps=args.steps), vgg=vgg)
    seconds = time.perf_counter() - start
    fast_image = fast.stylize(content, [gatys.StyleSource(painting)], FastOptions(size=size))
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        Path(args.save_dir, f"optimize_{size}.png").write_bytes(encode_png(opt.image))
        Path(args.save_dir, f"fast_{size}.png").write_bytes(encode_png(fast_image))
    photo, paint = judge.references(content, painting, h, w)
    s_opt, s_fast = judge.score(opt.image, content, painting), judge.score(fast_image, content, painting)
    drop = 1.0 - s_opt.style_loss / photo.style_loss
    passes = drop >= 0.9 and s_opt.content_loss < paint.content_loss and s_opt.style_loss < s_fast.style_loss < photo.style_loss
    return Quality(size, photo, paint, s_opt, s_fast, drop, seconds, args.steps, passes)


def timing(args: argparse.Namespace, device: str, content: Pixels, painting: Pixels, size: int) -> dict[str, float]:
    vgg = load_vgg19(MODELS / "vgg19", device)
    fast = ArbitraryStyle.load(MODELS / "style", device)
    styles = [gatys.StyleSource(painting)]
    fast.stylize(content, styles, FastOptions(size=size))  # warm-up
    fast_runs = []
    for _ in range(3):
        start = time.perf_counter()
        fast.stylize(content, styles, FastOptions(size=size))
        fast_runs.append(time.perf_counter() - start)
    n = args.steps if args.full_timing else args.timing_steps
    steps_done: list[float] = []
    start = time.perf_counter()
    gatys.stylize(
        content, styles, gatys.GatysOptions(size=size, steps=n), vgg=vgg, on_progress=lambda p: steps_done.append(time.perf_counter())
    )
    total = time.perf_counter() - start
    setup = steps_done[0] - start  # targets + first step
    per_step = (total - setup) / max(1, n - 1)
    optimize_s = total if args.full_timing else setup + per_step * (args.steps - 1)
    return {
        "size": size,
        "fast_s": statistics.median(fast_runs),
        "optimize_s_per_step": per_step,
        "optimize_s": optimize_s,
        "optimize_extrapolated_from_steps": n,
        "speedup_fast": optimize_s / statistics.median(fast_runs),
    }


def peak_child(method: str, size: int, device: str, threads: int) -> dict[str, float]:
    """Runs this script in a fresh process for one (method, size); returns its memory figures."""
    cmd = [sys.executable, __file__, "--child", method, str(size), "--device", device, "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child(method: str, size: int, device: str) -> None:
    content, painting = _load("astronaut.jpg", "content"), _load("the_starry_night.jpg", "paintings")
    vgg = load_vgg19(MODELS / "vgg19", device) if method == "optimize" else None
    fast = ArbitraryStyle.load(MODELS / "style", device) if method == "fast" else None
    base = _rss_mb()
    _reset_peak_rss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if vgg is not None:
        # Memory per step is constant, so a few steps show the peak of a full run.
        gatys.stylize(content, [gatys.StyleSource(painting)], gatys.GatysOptions(size=size, steps=3), vgg=vgg)
    else:
        assert fast is not None
        fast.stylize(content, [gatys.StyleSource(painting)], FastOptions(size=size))
    figures = {"rss_after_load_mb": base, "peak_rss_mb": _peak_rss_mb(), "working_mb": _peak_rss_mb() - base}
    if device.startswith("cuda"):
        figures["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(figures))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content", default="astronaut.jpg")
    parser.add_argument("--painting", default="the_starry_night.jpg")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--quality-size", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--timing-steps", type=int, default=10)
    parser.add_argument("--full-timing", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--save-dir", default="", help="write the quality run's images here")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args.child[0], int(args.child[1]), args.device)
        return 0

    content, painting = _load(args.content, "content"), _load(args.painting, "paintings")
    results: dict[str, object] = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "content": args.content,
        "painting": args.painting,
        "load_average_at_start": os.getloadavg(),
    }
    if not args.skip_quality:
        q = quality(args, args.device, content, painting)
        results["quality"] = asdict(q)
        print(
            f"quality @{q.size}px, {q.steps} L-BFGS steps ({q.optimize_seconds:.0f} s):\n"
            f"  photo     content {q.photo.content_loss:12.0f}  style {q.photo.style_loss:12.0f}\n"
            f"  painting  content {q.painting.content_loss:12.0f}  style {q.painting.style_loss:12.0f}\n"
            f"  optimize  content {q.optimize.content_loss:12.0f}  style {q.optimize.style_loss:12.0f}"
            f"  (style -{100 * q.optimize_style_drop:.1f} %)\n"
            f"  fast      content {q.fast.content_loss:12.0f}  style {q.fast.style_loss:12.0f}\n"
            f"  criteria {'PASS' if q.passes else 'FAIL'}",
            flush=True,
        )
    timings = []
    for size in args.sizes:
        t = timing(args, args.device, content, painting, size)
        timings.append(t)
        print(
            f"time @{size}px: fast {t['fast_s']:.2f} s, optimize {t['optimize_s']:.0f} s "
            f"({t['optimize_s_per_step']:.2f} s/step), fast is {t['speedup_fast']:.0f}x faster",
            flush=True,
        )
    results["timing"] = timings
    if not args.skip_memory:
        memory = {}
        for method in ("optimize", "fast"):
            for size in args.sizes:
                memory[f"{method}_{size}"] = m = peak_child(method, size, args.device, args.threads)
                print(f"memory {method} @{size}px: working {m['working_mb']:.0f} MB (peak RSS {m['peak_rss_mb']:.0f} MB)", flush=True)
        results["memory"] = memory
    results["load_average_at_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
