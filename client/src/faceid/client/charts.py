"""SVG charts of the clustering report, written as strings (the client has no numpy or matplotlib).

Each function returns one `<svg>` element with a viewBox, tooltips as `<title>` children and escaped text.
"""

from __future__ import annotations

import colorsys
import html
from collections.abc import Mapping, Sequence
from typing import Any

OUTLIER_COLOUR = "#d62728"
MAX_SCATTER_POINTS = 5000

# A qualitative palette (Tableau 10 + its light variants) for up to 20 clusters; more get golden-angle hues.
_PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
]


def cluster_colour(cluster: int, k: int) -> str:
    """A distinct colour per cluster: the palette up to 20 clusters, golden-angle hues beyond."""
    if k <= len(_PALETTE):
        return _PALETTE[cluster % len(_PALETTE)]
    hue = (cluster * 0.618033988749895) % 1.0
    r, g, b = colorsys.hls_to_rgb(hue, 0.5, 0.65)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def sizes_chart(
    clusters: Sequence[Mapping[str, Any]], colours: Mapping[int, str], width: int = 400, height: int = 260
) -> str:
    """SVG of the cluster sizes: one bar per cluster (largest first) up to 60 clusters, else a histogram
    of sizes (how many clusters have each size range)."""
    left, bottom, top, right = 36, 34, 12, 8
    pw, ph = width - left - right, height - top - bottom
    if not clusters:
        return _empty_svg(width, height, "no clusters")
    if len(clusters) <= 60:
        values = [c["size"] for c in clusters]
        fills = [colours[c["cluster"]] for c in clusters]
        names = [f"cluster {c['cluster']}: {c['size']} faces" for c in clusters]
        xlabel = "clusters, largest first"
    else:
        sizes = [c["size"] for c in clusters]
        lo, hi = min(sizes), max(sizes)
        nbins = 30
        step = max(1, -(-(hi - lo + 1) // nbins))
        values = [0] * (-(-(hi - lo + 1) // step))
        for s in sizes:
            values[(s - lo) // step] += 1
        fills = ["#4e79a7"] * len(values)
        names = [f"{lo + i * step}–{lo + (i + 1) * step - 1} faces: {v} clusters" for i, v in enumerate(values)]
        xlabel = f"cluster size ({lo} to {hi} faces)"
    vmax = max(values) or 1
    bw = pw / len(values)
    parts = [_svg_open(width, height, "Cluster sizes")]
    for tick in _ticks(vmax):
        y = top + ph - tick / vmax * ph
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ea"/>'
            f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end" class="tick">{tick}</text>'
        )
    for i, (v, fill, name) in enumerate(zip(values, fills, names, strict=True)):
        h = v / vmax * ph
        x = left + i * bw
        parts.append(
            f'<rect x="{x + bw * 0.1:.1f}" y="{top + ph - h:.1f}" width="{max(bw * 0.8, 1):.1f}" '
            f'height="{h:.1f}" fill="{fill}"><title>{html.escape(name)}</title></rect>'
        )
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + ph}" y2="{top + ph}" stroke="#889"/>')
    parts.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle" class="axis">'
        f"{html.escape(xlabel)}</text></svg>"
    )
    return "".join(parts)


def scatter_chart(
    faces: Sequence[Mapping[str, Any]], colours: Mapping[int, str], width: int = 400, height: int = 300
) -> str:
    """SVG scatter of the 2-D projection, one dot per face coloured by cluster; outliers ringed in red."""
    if not faces:
        return _empty_svg(width, height, "no faces")
    step = max(1, -(-len(faces) // MAX_SCATTER_POINTS))
    shown = faces[::step]
    xs, ys = [f["x"] for f in shown], [f["y"] for f in shown]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = 14
    sx = (width - 2 * pad) / ((x1 - x0) or 1.0)
    sy = (height - 2 * pad) / ((y1 - y0) or 1.0)
    radius = 4.5 if len(shown) <= 300 else 2.5 if len(shown) <= 2000 else 1.6
    parts = [
        _svg_open(width, height, "2-D projection of the embeddings (PCA), coloured by cluster"),
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" stroke="#e3e6ea"/>',
    ]
    # Outliers last, so their red rings are drawn on top.
    for f in sorted(shown, key=lambda f: bool(f.get("outlier"))):
        cx = pad + (f["x"] - x0) * sx
        cy = height - pad - (f["y"] - y0) * sy  # y up, as in any plot
        ring = (
            f' stroke="{OUTLIER_COLOUR}" stroke-width="2"' if f.get("outlier") else ' stroke="#fff" stroke-width="0.6"'
        )
        label = f"face {f['face_id']} · cluster {f['cluster']}" + (f" · {f['identity']}" if f.get("identity") else "")
        label += " · outlier" if f.get("outlier") else ""
        parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{colours.get(f["cluster"], "#888")}"'
            f"{ring}><title>{html.escape(label)}</title></circle>"
        )
    if step > 1:
        parts.append(
            f'<text x="{width - 6}" y="{height - 6}" text-anchor="end" class="tick">every {step}th face shown</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def k_chart(scores: Sequence[Mapping[str, Any]], chosen: int | None, width: int = 400, height: int = 160) -> str:
    """SVG line of silhouette against K (automatic K only), the chosen K marked; '' when not automatic."""
    if len(scores) < 2:
        return ""
    left, bottom, top, right = 40, 30, 22, 10
    pw, ph = width - left - right, height - top - bottom
    ks = [s["k"] for s in scores]
    vals = [s["silhouette"] for s in scores]
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0

    def xy(k: int, v: float) -> tuple[float, float]:
        return left + (k - ks[0]) / ((ks[-1] - ks[0]) or 1) * pw, top + ph - (v - lo) / span * ph

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(k, v) for k, v in zip(ks, vals, strict=True)))
    parts = [
        _svg_open(width, height, "Silhouette for each K tried"),
        f'<polyline points="{points}" fill="none" stroke="#4e79a7" stroke-width="2"/>',
    ]
    for k, v in zip(ks, vals, strict=True):
        x, y = xy(k, v)
        best = k == chosen
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if best else 2.5}" fill="{"#e15759" if best else "#4e79a7"}">'
            f"<title>K = {k}: silhouette {v:.3f}</title></circle>"
        )
        if best:
            parts.append(f'<text x="{x:.1f}" y="{y - 9:.1f}" text-anchor="middle" class="tick">chosen: K = {k}</text>')
    parts.append(
        f'<text x="{left}" y="{height - 8}" class="tick">K = {ks[0]}</text>'
        f'<text x="{width - right}" y="{height - 8}" text-anchor="end" class="tick">K = {ks[-1]}</text>'
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="tick">{hi:.2f}</text>'
        f'<text x="{left - 4}" y="{top + ph}" text-anchor="end" class="tick">{lo:.2f}</text></svg>'
    )
    return "".join(parts)


def _ticks(vmax: int) -> list[int]:
    step = max(1, round(vmax / 4))
    return list(range(0, vmax + 1, step))


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
    )


def _empty_svg(width: int, height: int, text: str) -> str:
    return (
        _svg_open(width, height, text) + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
        f'class="axis">{html.escape(text)}</text></svg>'
    )
