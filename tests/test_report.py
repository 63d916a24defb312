"""The clustering report: the result dict from the RPC message, a self-contained HTML page, the JSON
beside it, and a real headless-Chromium screenshot that must show the face thumbnails."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_crops import face_crops
from faceid.client.report import GRID_BACKGROUND, render_report, result_from_proto, write_report
from faceid.indexer.clustering import ClusteringResult, cluster
from faceid.v1 import clustering_pb2 as pb

TAU = 1.02
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def to_proto(result: ClusteringResult, face_ids: list[int], identities: list[str | None]) -> pb.ClusterResult:
    """What the servicer will send: the engine's result with the store's face ids and labels."""
    km = result.kmeans
    msg = pb.ClusterResult(
        model="facenet-20170512-128d",
        k=km.k,
        seed=result.seed,
        niter=km.iterations,
        scope=pb.CLUSTER_SCOPE_ALL,
        threshold=TAU,
        seconds=km.seconds,
        device=km.device,
        outlier_rule="distance to centroid > τ, or robust z-score > 3.5 in clusters of ≥ 10 faces",
    )
    m = result.metrics
    msg.metrics.inertia = m.inertia
    msg.metrics.labeled_faces = m.labeled_faces
    for name in ("silhouette", "purity", "nmi", "ari"):
        if getattr(m, name) is not None:
            setattr(msg.metrics, name, getattr(m, name))
    for k, score in sorted(result.k_scores.items()):
        msg.k_scores.add(k=k, silhouette=score)
    sizes = km.sizes()
    for c in range(km.k):
        s = msg.clusters.add(cluster=c, size=int(sizes[c]), outliers=int(result.outliers[km.assign == c].sum()))
        if result.nearest and result.nearest[c].identity is not None:
            near = result.nearest[c]
            s.nearest_identity, s.nearest_identity_id = near.identity, near.identity_id or 0
            s.nearest_distance, s.within_threshold = near.distance or 0.0, near.within_threshold
    for i, face_id in enumerate(face_ids):
        msg.faces.add(
            face_id=face_id,
            cluster=int(km.assign[i]),
            distance=float(km.distance[i]),
            outlier=bool(result.outliers[i]),
            identity=identities[i] or "",
            x=float(result.projection[i, 0]),
            y=float(result.projection[i, 1]),
        )
    return msg


def jpeg(rgb: np.ndarray, size: int = 96) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).resize((size, size), Image.BILINEAR).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def faces_report():
    """Real faces: clustered by the engine (K = 16, every other face 'enrolled' for naming), one unlabeled
    face per person, the report dict from the proto message, and thumbnails from the real crops."""
    fc = face_crops()
    people = np.array(fc.people)
    x = fc.embeddings
    enrolled = np.arange(len(people)) % 2 == 0

    def search(queries: np.ndarray) -> list[tuple[str, int, float]]:
        d = np.linalg.norm(queries[:, None, :] - x[enrolled][None], axis=2)
        return [(str(people[enrolled][j]), int(j) + 1, float(d[i, j])) for i, j in enumerate(d.argmin(1))]

    identities = [None if i % 5 == 4 else p for i, p in enumerate(fc.people)]
    result = cluster(x, k=16, labels=identities, threshold=TAU, seed=0, search=search)
    face_ids = [1000 + i for i in range(len(people))]
    report = result_from_proto(to_proto(result, face_ids, identities))
    # The crops are prewhitened (an affine map of the pixels per crop): stretch them back to 0..255 to show them.
    thumbs = {}
    for face_id, crop in zip(face_ids, fc.crops.numpy(), strict=True):
        rgb = (crop - crop.min()) / (crop.max() - crop.min()) * 255
        thumbs[face_id] = jpeg(rgb.transpose(1, 2, 0).round().astype(np.uint8))
    return report, thumbs


def small_result() -> dict:
    return {
        "model": "m",
        "k": 2,
        "seed": 0,
        "niter": 20,
        "scope": "all",
        "threshold": 1.02,
        "outlier_rule": "rule",
        "metrics": {"inertia": 1.5, "silhouette": 0.5, "purity": None, "nmi": None, "ari": None, "labeled_faces": 0},
        "clusters": [
            {
                "cluster": 0,
                "size": 1,
                "nearest_identity": None,
                "nearest_distance": None,
                "within_threshold": False,
                "outliers": 0,
            },
            {
                "cluster": 1,
                "size": 2,
                "nearest_identity": "ann <b>",
                "nearest_distance": 0.4,
                "within_threshold": True,
                "outliers": 1,
            },
        ],
        "faces": [
            {"face_id": 7, "cluster": 0, "distance": 0.1, "outlier": False, "identity": None, "x": 0.0, "y": 0.0},
            {"face_id": 8, "cluster": 1, "distance": 0.2, "outlier": False, "identity": "ann <b>", "x": 1.0, "y": 1.0},
            {"face_id": 9, "cluster": 1, "distance": 1.2, "outlier": True, "identity": None, "x": 1.0, "y": 2.0},
        ],
    }


def test_html_is_self_contained_largest_cluster_first_and_escaped(tmp_path: Path) -> None:
    thumb = jpeg(np.full((8, 8, 3), 120, np.uint8))
    page = render_report(small_result(), {8: thumb, 9: thumb})
    assert page.index('id="cluster-1"') < page.index('id="cluster-0"')  # 2 faces before 1
    assert page.count("data:image/jpeg;base64,") == 2 and "no thumbnail" in page  # face 7 has none
    assert 'class="outlier"' in page and page.count("<svg") >= 2
    assert "ann &lt;b&gt;" in page and "ann <b>" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must not load anything from outside"
    html_path, json_path = write_report(tmp_path / "report.html", small_result(), {8: thumb})
    assert json_path == tmp_path / "report.json"
    assert json.loads(json_path.read_text()) == small_result()
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_many_clusters_get_a_size_histogram_and_capped_grids() -> None:
    faces = [
        {
            "face_id": i,
            "cluster": i % 100,
            "distance": 0.3,
            "outlier": False,
            "identity": None,
            "x": float(i),
            "y": float(i % 7),
        }
        for i in range(8000)
    ]
    clusters = [
        {
            "cluster": c,
            "size": 80,
            "nearest_identity": None,
            "nearest_distance": None,
            "within_threshold": False,
            "outliers": 0,
        }
        for c in range(100)
    ]
    page = render_report(
        {"k": 100, "metrics": {"inertia": 1.0, "silhouette": None}, "clusters": clusters, "faces": faces}, {}
    )
    assert "cluster size (80 to 80 faces)" in page  # histogram, not 100 bars
    assert page.count("+ 20 more") == 100  # 60 tiles shown per cluster
    assert "every 2th face shown" in page  # the scatter keeps ≤ 5,000 dots


def test_report_module_needs_no_numpy_or_torch() -> None:
    code = (
        "import sys; import faceid.client.report as r; "
        "r.render_report({'k': 0, 'clusters': [], 'faces': [], 'metrics': {}}, {}); "
        "bad = [m for m in ('numpy', 'torch', 'faiss') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_result_dict_from_the_proto_message(faces_report) -> None:
    report, thumbs = faces_report
    assert report["k"] == 16 and len(report["faces"]) == 79 and len(report["clusters"]) == 16
    assert report["metrics"]["nmi"] is not None and report["metrics"]["nmi"] >= 0.9
    assert report["metrics"]["labeled_faces"] == 79 - 79 // 5
    assert all(c["nearest_identity"] for c in report["clusters"])
    assert sum(f["identity"] is None for f in report["faces"]) == 79 // 5
    json.dumps(report)  # plain JSON types only


@pytest.mark.slow
def test_chromium_screenshot_shows_the_face_thumbnails(faces_report, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    report, thumbs = faces_report
    html_path, _ = write_report(tmp_path / "report.html", report, thumbs)
    real = screenshot(html_path, tmp_path)
    blank_jpeg = jpeg(np.full((96, 96, 3), 200, np.uint8))
    blank_path, _ = write_report(tmp_path / "blank.html", report, {k: blank_jpeg for k in thumbs})
    blank = screenshot(blank_path, tmp_path)

    grid_rgb = np.array([int(GRID_BACKGROUND[i : i + 2], 16) for i in (1, 3, 5)])
    on_grid = np.abs(real.astype(int) - grid_rgb).max(axis=2) <= 3
    assert on_grid.sum() > 50_000, "the thumbnail grids are not on the page"
    rows = np.flatnonzero(on_grid.any(axis=1))
    region = slice(rows.min(), rows.max() + 1)
    faces_real, skin_real = textured_blocks(real[region])
    faces_blank, _ = textured_blocks(blank[region])
    # An 88×88 px thumbnail holds ~100 8×8 blocks; ~50 thumbnails are above the fold of 1280×2000.
    assert faces_real >= 2000, faces_real
    assert faces_real > 20 * max(faces_blank, 1), (faces_real, faces_blank)
    assert skin_real > 0.3, f"only {skin_real:.0%} of the textured blocks are skin-coloured"


def screenshot(page: Path, tmp: Path) -> np.ndarray:
    png = page.with_suffix(".png")
    profile = tmp / f"profile-{page.stem}"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
        page.resolve().as_uri(),
    ]
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    return np.asarray(Image.open(png).convert("RGB"))


def textured_blocks(rgb: np.ndarray, block: int = 8) -> tuple[int, float]:
    """(8×8 blocks that look like photo content, share of them whose mean colour is skin-like).

    A block counts when it touches neither the grid background nor white (page, captions' surroundings,
    the thumbnails' white frame), its luminance varies and it holds many distinct colours: the inside of
    a photo, not a flat image or the edge where two flat areas (card borders) meet.
    """
    h, w = (rgb.shape[0] // block) * block, (rgb.shape[1] // block) * block
    tiles = rgb[:h, :w].reshape(h // block, block, w // block, block, 3).swapaxes(1, 2).reshape(-1, block * block, 3)
    grid_rgb = np.array([int(GRID_BACKGROUND[i : i + 2], 16) for i in (1, 3, 5)])
    touches_grid = (np.abs(tiles.astype(int) - grid_rgb).max(axis=2) <= 3).any(axis=1)
    touches_white = (tiles.min(axis=2) >= 245).any(axis=1)
    lum = tiles.astype(float) @ np.array([0.299, 0.587, 0.114])
    packed = tiles.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    colours = np.array([np.unique(t).size for t in packed])
    textured = ~touches_grid & ~touches_white & (lum.std(axis=1) > 4) & (colours >= 12)
    mean = tiles[textured].mean(axis=1)
    r, g, b = mean[:, 0], mean[:, 1], mean[:, 2]
    skin = (r > 60) & (r > g) & (g > b * 0.9) & (r - b > 10)
    return int(textured.sum()), float(skin.mean()) if skin.size else 0.0
