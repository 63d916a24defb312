"""The clustering report: one self-contained HTML file (images as data: URIs, inline CSS and SVG) and
the same result as JSON beside it, for programs.

No numpy here (the client installs grpcio, protobuf and jinja2 only): the server sends the 2-D projection,
and the charts are SVG written by the small functions below.

The `result` dict (`ClusterReport`) mirrors the Cluster RPC's final message; `result_from_proto` builds
it. Face ids are the store's; thumbnails are JPEG bytes by face id (faces without one get a placeholder).
"""

from __future__ import annotations

import base64
import colorsys
import html
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict

import jinja2

TEMPLATES = Path(__file__).parent / "templates"
GRID_BACKGROUND = "#dfe7f2"  # every thumbnail grid sits on this colour (tests find the grids by it)
OUTLIER_COLOUR = "#d62728"
MAX_THUMBNAILS_PER_CLUSTER = 60
MAX_SCATTER_POINTS = 5000

# A qualitative palette (Tableau 10 + its light variants) for up to 20 clusters; more get golden-angle hues.
_PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8"]


class Metrics(TypedDict, total=False):
    inertia: float  # Σ squared distance to the unit centroids
    silhouette: float | None  # cosine silhouette, None when undefined (K < 2 or K = n)
    purity: float | None  # None when no face in scope is labeled
    nmi: float | None
    ari: float | None
    labeled_faces: int


class ClusterInfo(TypedDict):
    cluster: int  # index, 0..k-1
    size: int
    nearest_identity: str | None  # enrolled identity nearest to the centroid; None if the gallery has none
    nearest_distance: float | None
    within_threshold: bool  # nearest_distance <= threshold
    outliers: int


class FaceInfo(TypedDict):
    face_id: int
    cluster: int
    distance: float  # to its cluster's centroid
    outlier: bool
    identity: str | None  # the face's own label, None when unlabeled
    x: float  # 2-D projection
    y: float


class KScore(TypedDict):
    k: int
    silhouette: float


class ClusterReport(TypedDict, total=False):
    model: str
    k: int
    seed: int
    niter: int
    scope: str  # "all", "unlabeled" or "identities"
    threshold: float
    device: str
    seconds: float
    outlier_rule: str
    created_at: str  # ISO 8601, UTC
    metrics: Metrics
    k_scores: list[KScore]  # automatic K only
    clusters: list[ClusterInfo]
    faces: list[FaceInfo]


def result_from_proto(msg: Any) -> ClusterReport:
    """The report dict of a faceid.v1.ClusterResult message (optional fields absent -> None)."""
    m = msg.metrics

    def opt(name: str) -> float | None:
        return getattr(m, name) if m.HasField(name) else None

    scope_names = {0: "all", 1: "all", 2: "unlabeled", 3: "identities"}
    return ClusterReport(
        model=msg.model, k=msg.k, seed=msg.seed, niter=msg.niter, scope=scope_names.get(msg.scope, "all"),
        threshold=msg.threshold, device=msg.device, seconds=msg.seconds, outlier_rule=msg.outlier_rule,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        metrics=Metrics(inertia=m.inertia, silhouette=opt("silhouette"), purity=opt("purity"), nmi=opt("nmi"),
                        ari=opt("ari"), labeled_faces=m.labeled_faces),
        k_scores=[KScore(k=s.k, silhouette=s.silhouette) for s in msg.k_scores],
        clusters=[ClusterInfo(cluster=c.cluster, size=c.size, nearest_identity=c.nearest_identity or None,
                              nearest_distance=c.nearest_distance if c.nearest_identity else None,
                              within_threshold=c.within_threshold, outliers=c.outliers) for c in msg.clusters],
        faces=[FaceInfo(face_id=f.face_id, cluster=f.cluster, distance=f.distance, outlier=f.outlier,
                        identity=f.identity or None, x=f.x, y=f.y) for f in msg.faces],
    )


def write_report(path: Path, result: ClusterReport, thumbnails: Mapping[int, bytes]) -> tuple[Path, Path]:
    """Write the HTML report to `path` and the result as JSON beside it (same name, .json).

    Returns (html path, json path).
    """
    path = Path(path)
    json_path = path.with_suffix(".json")
    path.write_text(render_report(result, thumbnails), encoding="utf-8")
    json_path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path, json_path


def render_report(result: ClusterReport | Mapping[str, Any], thumbnails: Mapping[int, bytes]) -> str:
    """The self-contained HTML report of one clustering result."""
    faces = list(result.get("faces", []))
    clusters = sorted(result.get("clusters", []), key=lambda c: (-c["size"], c["cluster"]))
    colours = {c["cluster"]: cluster_colour(c["cluster"], len(clusters)) for c in clusters}
    members: dict[int, list[Mapping[str, Any]]] = {c["cluster"]: [] for c in clusters}
    for face in faces:
        members.setdefault(face["cluster"], []).append(face)

    cards = []
    for c in clusters:
        own = members.get(c["cluster"], [])
        labels = [f["identity"] for f in own if f.get("identity")]
        majority = max(set(labels), key=labels.count) if labels else None
        cards.append({
            "info": c,
            "colour": colours[c["cluster"]],
            "tiles": [_tile(f, thumbnails) for f in _shown(own, MAX_THUMBNAILS_PER_CLUSTER)],
            "hidden": max(0, len(own) - MAX_THUMBNAILS_PER_CLUSTER),
            "majority": majority,
            "majority_share": labels.count(majority) / len(labels) if majority else None,
        })

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    return env.get_template("report.html.j2").render(
        r=_with_defaults(result),
        metrics=_metric_rows(result.get("metrics", {}), result.get("threshold")),
        cards=cards,
        faces_total=len(faces),
        outliers_total=sum(1 for f in faces if f.get("outlier")),
        sizes_svg=_markup(sizes_chart(clusters, colours)),
        scatter_svg=_markup(scatter_chart(faces, colours)),
        kscore_svg=_markup(k_chart(result.get("k_scores") or [], result.get("k"))),
        grid_background=GRID_BACKGROUND,
        outlier_colour=OUTLIER_COLOUR,
        generated=result.get("created_at") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# ------------------------------------------------------------------------------------------- pieces


def cluster_colour(cluster: int, k: int) -> str:
    """A distinct colour per cluster: the palette up to 20 clusters, golden-angle hues beyond."""
    if k <= len(_PALETTE):
        return _PALETTE[cluster % len(_PALETTE)]
    hue = (cluster * 0.618033988749895) % 1.0
    r, g, b = colorsys.hls_to_rgb(hue, 0.5, 0.65)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def sizes_chart(clusters: Sequence[Mapping[str, Any]], colours: Mapping[int, str], width: int = 400,
                height: int = 260) -> str:
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
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ea"/>'
                     f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end" class="tick">{tick}</text>')
    for i, (v, fill, name) in enumerate(zip(values, fills, names, strict=True)):
        h = v / vmax * ph
        x = left + i * bw
        parts.append(f'<rect x="{x + bw * 0.1:.1f}" y="{top + ph - h:.1f}" width="{max(bw * 0.8, 1):.1f}" '
                     f'height="{h:.1f}" fill="{fill}"><title>{html.escape(name)}</title></rect>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + ph}" y2="{top + ph}" stroke="#889"/>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle" class="axis">'
                 f'{html.escape(xlabel)}</text></svg>')
    return "".join(parts)


def scatter_chart(faces: Sequence[Mapping[str, Any]], colours: Mapping[int, str], width: int = 400,
                  height: int = 300) -> str:
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
    parts = [_svg_open(width, height, "2-D projection of the embeddings (PCA), coloured by cluster"),
             f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" stroke="#e3e6ea"/>']
    # Outliers last, so their red rings are drawn on top.
    for f in sorted(shown, key=lambda f: bool(f.get("outlier"))):
        cx = pad + (f["x"] - x0) * sx
        cy = height - pad - (f["y"] - y0) * sy  # y up, as in any plot
        ring = f' stroke="{OUTLIER_COLOUR}" stroke-width="2"' if f.get("outlier") else ' stroke="#fff" stroke-width="0.6"'
        label = f"face {f['face_id']} · cluster {f['cluster']}" + (f" · {f['identity']}" if f.get("identity") else "")
        label += " · outlier" if f.get("outlier") else ""
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{colours.get(f["cluster"], "#888")}"'
                     f'{ring}><title>{html.escape(label)}</title></circle>')
    if step > 1:
        parts.append(f'<text x="{width - 6}" y="{height - 6}" text-anchor="end" class="tick">'
                     f'every {step}th face shown</text>')
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
    parts = [_svg_open(width, height, "Silhouette for each K tried"),
             f'<polyline points="{points}" fill="none" stroke="#4e79a7" stroke-width="2"/>']
    for k, v in zip(ks, vals, strict=True):
        x, y = xy(k, v)
        best = k == chosen
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if best else 2.5}" fill="{"#e15759" if best else "#4e79a7"}">'
                     f'<title>K = {k}: silhouette {v:.3f}</title></circle>')
        if best:
            parts.append(f'<text x="{x:.1f}" y="{y - 9:.1f}" text-anchor="middle" class="tick">chosen: K = {k}</text>')
    parts.append(f'<text x="{left}" y="{height - 8}" class="tick">K = {ks[0]}</text>'
                 f'<text x="{width - right}" y="{height - 8}" text-anchor="end" class="tick">K = {ks[-1]}</text>'
                 f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="tick">{hi:.2f}</text>'
                 f'<text x="{left - 4}" y="{top + ph}" text-anchor="end" class="tick">{lo:.2f}</text></svg>')
    return "".join(parts)


def _with_defaults(result: Mapping[str, Any]) -> dict[str, Any]:
    """Every optional top-level field present (the template is strict about undefined names)."""
    defaults: dict[str, Any] = {"model": "?", "k": len(result.get("clusters", [])), "seed": 0, "niter": 20,
                                "scope": "all", "threshold": None, "device": "cpu", "seconds": None,
                                "outlier_rule": "", "k_scores": []}
    return {**defaults, **{key: value for key, value in result.items() if value is not None}}


def _metric_rows(metrics: Mapping[str, Any], threshold: float | None) -> list[tuple[str, str, str]]:
    rows = [("Inertia", _num(metrics.get("inertia"), 2), "Σ squared distance of each face to its unit centroid (lower is tighter)"),
            ("Silhouette", _num(metrics.get("silhouette")), "cosine; −1…1, higher means tight, well-separated clusters")]
    if metrics.get("nmi") is not None:
        n = metrics.get("labeled_faces", 0)
        rows += [("Purity", _num(metrics.get("purity")), f"share of the {n} labeled faces in a cluster whose majority is their identity"),
                 ("NMI", _num(metrics.get("nmi")), "normalized mutual information with the identities (1 = same partition)"),
                 ("Adjusted Rand", _num(metrics.get("ari")), "agreement with the identities, 0 = chance, 1 = identical")]
    if threshold is not None:
        rows.append(("Threshold τ", _num(threshold), "the model's same-person distance (outliers, naming)"))
    return rows


def _shown(faces: list[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """Closest-to-centroid first; outliers always shown (last), within `limit` tiles."""
    inliers = sorted((f for f in faces if not f.get("outlier")), key=lambda f: f["distance"])
    outliers = sorted((f for f in faces if f.get("outlier")), key=lambda f: f["distance"])[:limit]
    return inliers[: limit - len(outliers)] + outliers


def _tile(face: Mapping[str, Any], thumbnails: Mapping[int, bytes]) -> dict[str, Any]:
    jpeg = thumbnails.get(face["face_id"])
    caption = face.get("identity") or f"face {face['face_id']}"
    return {
        "src": f"data:image/jpeg;base64,{base64.b64encode(jpeg).decode('ascii')}" if jpeg else None,
        "caption": caption,
        "title": f"face {face['face_id']} · distance to centroid {face['distance']:.3f}"
                 + (f" · {face['identity']}" if face.get("identity") else "") + (" · OUTLIER" if face.get("outlier") else ""),
        "outlier": bool(face.get("outlier")),
    }


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _ticks(vmax: int) -> list[int]:
    step = max(1, round(vmax / 4))
    return list(range(0, vmax + 1, step))


def _svg_open(width: int, height: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>')


def _empty_svg(width: int, height: int, text: str) -> str:
    return (_svg_open(width, height, text) + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
            f'class="axis">{html.escape(text)}</text></svg>')


def _markup(svg: str) -> Any:
    import markupsafe  # jinja2's own dependency

    return markupsafe.Markup(svg)
