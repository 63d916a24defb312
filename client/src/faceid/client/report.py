"""The clustering report: one self-contained HTML file (images as data: URIs, inline CSS and SVG) and
the same result as JSON beside it, for programs.

No numpy here (the client installs grpcio, protobuf and jinja2 only): the server sends the 2-D projection,
and the charts are SVG strings written by charts.py.

The `result` dict (`ClusterReport`) mirrors the Cluster RPC's final message; `result_from_proto` builds
it. Face ids are the store's; thumbnails are JPEG bytes by face id (faces without one get a placeholder).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import jinja2

from faceid.client.charts import OUTLIER_COLOUR, cluster_colour, k_chart, scatter_chart, sizes_chart

TEMPLATES = Path(__file__).parent / "templates"
GRID_BACKGROUND = "#dfe7f2"  # every thumbnail grid sits on this colour (tests find the grids by it)
MAX_THUMBNAILS_PER_CLUSTER = 60


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
        model=msg.model,
        k=msg.k,
        seed=msg.seed,
        niter=msg.niter,
        scope=scope_names.get(msg.scope, "all"),
        threshold=msg.threshold,
        device=msg.device,
        seconds=msg.seconds,
        outlier_rule=msg.outlier_rule,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        metrics=Metrics(
            inertia=m.inertia,
            silhouette=opt("silhouette"),
            purity=opt("purity"),
            nmi=opt("nmi"),
            ari=opt("ari"),
            labeled_faces=m.labeled_faces,
        ),
        k_scores=[KScore(k=s.k, silhouette=s.silhouette) for s in msg.k_scores],
        clusters=[
            ClusterInfo(
                cluster=c.cluster,
                size=c.size,
                nearest_identity=c.nearest_identity or None,
                nearest_distance=c.nearest_distance if c.nearest_identity else None,
                within_threshold=c.within_threshold,
                outliers=c.outliers,
            )
            for c in msg.clusters
        ],
        faces=[
            FaceInfo(
                face_id=f.face_id,
                cluster=f.cluster,
                distance=f.distance,
                outlier=f.outlier,
                identity=f.identity or None,
                x=f.x,
                y=f.y,
            )
            for f in msg.faces
        ],
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
        cards.append(
            {
                "info": c,
                "colour": colours[c["cluster"]],
                "tiles": [_tile(f, thumbnails) for f in _shown(own, MAX_THUMBNAILS_PER_CLUSTER)],
                "hidden": max(0, len(own) - MAX_THUMBNAILS_PER_CLUSTER),
                "majority": majority,
                "majority_share": labels.count(majority) / len(labels) if majority else None,
            }
        )

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
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
        generated=result.get("created_at") or datetime.now(UTC).isoformat(timespec="seconds"),
    )


# ------------------------------------------------------------------------------------------- pieces


def _with_defaults(result: Mapping[str, Any]) -> dict[str, Any]:
    """Every optional top-level field present (the template is strict about undefined names)."""
    defaults: dict[str, Any] = {
        "model": "?",
        "k": len(result.get("clusters", [])),
        "seed": 0,
        "niter": 20,
        "scope": "all",
        "threshold": None,
        "device": "cpu",
        "seconds": None,
        "outlier_rule": "",
        "k_scores": [],
    }
    return {**defaults, **{key: value for key, value in result.items() if value is not None}}


def _metric_rows(metrics: Mapping[str, Any], threshold: float | None) -> list[tuple[str, str, str]]:
    rows = [
        (
            "Inertia",
            _num(metrics.get("inertia"), 2),
            "Σ squared distance of each face to its unit centroid (lower is tighter)",
        ),
        ("Silhouette", _num(metrics.get("silhouette")), "cosine; −1…1, higher means tight, well-separated clusters"),
    ]
    if metrics.get("nmi") is not None:
        n = metrics.get("labeled_faces", 0)
        rows += [
            (
                "Purity",
                _num(metrics.get("purity")),
                f"share of the {n} labeled faces in a cluster whose majority is their identity",
            ),
            ("NMI", _num(metrics.get("nmi")), "normalized mutual information with the identities (1 = same partition)"),
            ("Adjusted Rand", _num(metrics.get("ari")), "agreement with the identities, 0 = chance, 1 = identical"),
        ]
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
        + (f" · {face['identity']}" if face.get("identity") else "")
        + (" · OUTLIER" if face.get("outlier") else ""),
        "outlier": bool(face.get("outlier")),
    }


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _markup(svg: str) -> Any:
    import markupsafe  # jinja2's own dependency

    return markupsafe.Markup(svg)
