"""The picture grid of docs/style.md: content photos x paintings, both methods, with judge scores.

    uv run python bench/style_grid.py                     # 2 photos x 3 paintings at 192 px -> docs/style/grid.jpg
    uv run python bench/style_grid.py --contents tubingen.jpg chicago.jpg --paintings the_scream.jpg --size 256

Each row is one photo (centre-cropped to a square): the photo, then for every painting `optimize` (Gatys, L-BFGS,
--steps) and `fast` (Magenta). A header row shows the paintings. The judge's content and style losses of every
cell go to the JSON beside the image, with the photo's and painting's own scores as references.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from faceid.server.style import gatys
from faceid.server.style.fast import ArbitraryStyle, FastOptions
from faceid.server.style.images import Pixels, crop_to_aspect, decode, resize
from faceid.server.style.judge import Judge
from faceid.server.style.vgg19 import load_vgg19

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEID_SHARED_DIR", REPO.parent / "shared"))
MODELS = Path(os.environ.get("FACEID_MODEL_DIR", SHARED / "models"))
STYLE_DATA = SHARED / "data" / "style"
LABEL_H = 16


def _square(image: Pixels, side: int) -> Pixels:
    return resize(crop_to_aspect(image, 1, 1), side, side)


def _label(cell: Pixels, text: str) -> Pixels:
    img = Image.new("RGB", (cell.shape[1], cell.shape[0] + LABEL_H), "white")
    img.paste(Image.fromarray(cell), (0, LABEL_H))
    ImageDraw.Draw(img).text((3, 2), text, fill="black")
    return np.asarray(img)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contents", nargs="+", default=["chicago.jpg", "chelsea_cat.jpg"])
    parser.add_argument(
        "--paintings", nargs="+", default=["the_starry_night.jpg", "the_great_wave_off_kanagawa.jpg", "composition_vii.jpg"]
    )
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(REPO / "docs" / "style" / "grid.jpg"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    vgg = load_vgg19(MODELS / "vgg19", args.device)
    fast = ArbitraryStyle.load(MODELS / "style", args.device)
    judge = Judge(vgg)
    side = args.size
    paintings = {name: decode((STYLE_DATA / "paintings" / name).read_bytes()) for name in args.paintings}
    blank = np.full((side, side, 3), 255, np.uint8)
    header = [_label(blank, "")]
    for name, painting in paintings.items():
        short = name.removesuffix(".jpg").replace("_", " ")[:28]
        header += [_label(_square(painting, side), short), _label(blank, "")]
    rows = [np.concatenate(header, axis=1)]
    scores: list[dict[str, object]] = []
    for content_name in args.contents:
        content = _square(decode((STYLE_DATA / "content" / content_name).read_bytes()), side)
        cells = [_label(content, content_name.removesuffix(".jpg"))]
        for painting_name, painting in paintings.items():
            styles = [gatys.StyleSource(painting)]
            start = time.perf_counter()
            opt = gatys.stylize(content, styles, gatys.GatysOptions(size=side, steps=args.steps), vgg=vgg).image
            opt_s = time.perf_counter() - start
            start = time.perf_counter()
            quick = fast.stylize(content, styles, FastOptions(size=side))
            fast_s = time.perf_counter() - start
            photo_ref, paint_ref = judge.references(content, painting, side, side)
            s_opt, s_fast = judge.score(opt, content, painting), judge.score(quick, content, painting)
            scores.append(
                {
                    "content": content_name,
                    "painting": painting_name,
                    "photo": vars(photo_ref),
                    "painting_ref": vars(paint_ref),
                    "optimize": vars(s_opt),
                    "fast": vars(s_fast),
                    "optimize_style_drop": 1 - s_opt.style_loss / photo_ref.style_loss,
                    "fast_style_drop": 1 - s_fast.style_loss / photo_ref.style_loss,
                    "optimize_s": opt_s,
                    "fast_s": fast_s,
                }
            )
            print(
                f"{content_name} x {painting_name}: optimize {opt_s:.0f} s style -{100 * scores[-1]['optimize_style_drop']:.0f} % "
                f"(content {s_opt.content_loss:.0f} < painting's {paint_ref.content_loss:.0f}), "
                f"fast {fast_s:.1f} s style -{100 * scores[-1]['fast_style_drop']:.0f} %",
                flush=True,
            )
            cells += [_label(opt, f"optimize {args.steps} steps"), _label(quick, "fast")]
        rows.append(np.concatenate(cells, axis=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out, quality=85, optimize=True)
    meta = {"size": side, "steps": args.steps, "device": args.device, "torch_threads": torch.get_num_threads(), "cells": scores}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {out} ({out.stat().st_size // 1024} KB) and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
