"""`faceid reindex --model ID`: re-embed every stored face under another model id and switch the gallery to it.

A gallery never mixes model ids, so changing the model (e.g. to one made by `faceid train triplet`) means
re-embedding every stored face. Each face is re-cropped at the new model's crop size and margin from
- its original photo, when `originals` names a folder holding it (matched by the photo's sha256, the same key the
  store keeps; the stored box is re-used, so it is exactly the enrolled face), else
- its stored thumbnail (a JPEG of the old model's aligned crop, 96 px by default), upsampled to the crop size;
  only when the two models crop alike (same crop size and margin, as for a model fine-tuned from the old one).
  Upsampling loses detail: prefer originals, and calibrate the new model afterwards.
Faces that neither way can re-embed are listed and stop the reindex before any write (unless `drop_unembeddable`).

The switch is one store transaction (store.model_switch): new rows in, old rows out. It runs offline, against
the database, with the server stopped: the server holds one model and its index in memory, and is then started
with `--model ID` (it rebuilds its index from the store at start). A running server of the old model would find
its faces gone and serve an empty gallery.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from faceid.indexer.errors import FailedPrecondition, FaceIdError, InvalidRequest, UnknownModel
from faceid.indexer.models.spec import ModelSpec
from faceid.indexer.store import GalleryStore, NewFace
from faceid.indexer.store.model_switch import SourceFace

if TYPE_CHECKING:
    from PIL import Image

    from faceid.indexer.detection import Detection

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class ReindexFailure:
    face_id: int
    image_sha256: str
    reason: str


@dataclass(frozen=True)
class ReindexResult:
    source_model: str
    target_model: str
    faces: int  # faces of the gallery now, all of target_model
    from_originals: int
    from_thumbnails: int
    dropped: tuple[ReindexFailure, ...]  # not carried over (only with drop_unembeddable)
    vanished: int  # deleted while re-embedding
    deleted: int  # rows of source_model removed
    checksum: str  # the store's checksum of target_model's face ids after the switch


def choose_source_model(counts: dict[str, int], target: str, source: str | None) -> str:
    """The model the gallery is embedded by now (the one other than `target`); `source` picks among several."""
    others = sorted(m for m, n in counts.items() if n and m != target)
    if source is not None:
        if source == target:
            raise InvalidRequest(f"--from and --model are both {target!r}: nothing to reindex")
        if not counts.get(source):
            raise InvalidRequest(f"the gallery holds no faces of {source!r}; it holds {_describe(counts)}")
        return source
    if not others:
        raise InvalidRequest(f"nothing to reindex: the gallery holds {_describe(counts)}")
    if len(others) > 1:
        raise InvalidRequest(f"the gallery holds faces of several models ({_describe(counts)}): pick one with --from")
    return others[0]


def reindex_gallery(
    store: GalleryStore,
    spec: ModelSpec,
    network: object,
    *,
    device: str = "cpu",
    source_model: str | None = None,
    source_spec: ModelSpec | None = None,
    originals: Path | None = None,
    drop_unembeddable: bool = False,
    thumbnail_size: int = 96,
    batch_size: int = 32,
    actor: str = "faceid reindex",
    progress: bool = True,
) -> ReindexResult:
    """Re-embed every face of the gallery's current model with `network` (the model `spec`) and switch to it.

    source_spec: the current model's spec, needed for the thumbnail path (its crop geometry); None when
    unknown (then only originals can be used). Raises InvalidRequest / FailedPrecondition before any write.
    """
    from tqdm.auto import tqdm

    from faceid.indexer.detection import FaceDetector
    from faceid.indexer.embedding import Embedder
    from faceid.indexer.pipeline import thumbnail_jpeg

    source = choose_source_model(store.face_counts_by_model(), spec.name, source_model)
    rows = store.reindex_sources(source)
    by_sha = _index_originals(originals, {r.image_sha256 for r in rows}) if originals is not None else {}
    detector = FaceDetector(device=device, image_size=spec.image_size, margin=spec.margin)
    thumb_problem = _thumbnail_geometry_problem(source, source_spec, spec)

    crops: list[NDArray[np.uint8]] = []
    kept: list[tuple[SourceFace, bool]] = []  # (face, from the original photo)
    failures: list[ReindexFailure] = []
    bar = tqdm(total=len(rows), desc=f"crop/{spec.name}", unit="face", disable=not progress)
    for sha, group in _group_by_image(rows):
        path = by_sha.get(sha)
        image = None
        if path is not None:
            try:
                image = _decode(path)
            except FaceIdError as exc:
                failures.extend(ReindexFailure(r.face_id, sha, f"{path}: {exc}") for r in group)
                bar.update(len(group))
                continue
        for row in group:
            if image is not None:
                crops.append(detector.crop(image, _box_only(row)))
                kept.append((row, True))
            elif row.thumbnail is not None and thumb_problem is None:
                crops.append(_crop_from_thumbnail(row.thumbnail, spec.image_size))
                kept.append((row, False))
            else:
                why = "no original photo with this sha256" + (" given" if originals is None else f" in {originals}")
                why += "; no stored thumbnail" if row.thumbnail is None else f"; thumbnail unusable: {thumb_problem}"
                failures.append(ReindexFailure(row.face_id, sha, why))
            bar.update(1)
    bar.close()
    if failures and not drop_unembeddable:
        sample = "; ".join(f"face {f.face_id}: {f.reason}" for f in failures[:3])
        raise FailedPrecondition(
            f"{len(failures)} of {len(rows)} faces of {source!r} cannot be re-embedded ({sample}). Nothing was "
            "changed: re-supply the original photos with --originals DIR, or pass --drop-unembeddable to leave "
            "those faces out of the new gallery"
        )

    embedder = Embedder(network, spec.preprocessing, device=device, batch_size=batch_size)  # type: ignore[arg-type]
    vectors = np.zeros((0, spec.dimension), np.float32)
    if crops:
        stacked = np.stack(crops)
        parts = []
        for start in tqdm(range(0, len(stacked), 256), desc=f"embed/{spec.name}", unit="batch", disable=not progress):
            parts.append(embedder.embed(stacked[start : start + 256]))
        vectors = np.concatenate(parts)
    replacements: dict[int, NewFace] = {}
    for (row, original), crop, vector in zip(kept, crops, vectors, strict=True):
        thumb = row.thumbnail
        if original and thumbnail_size > 0:
            thumb = thumbnail_jpeg(crop, thumbnail_size)  # the new model's crop, as enrolment would store it
        replacements[row.face_id] = NewFace(spec.name, vector, row.image_sha256, row.box, row.probability, thumb)
    switched = store.switch_model(source_model=source, target_model=spec.name, replacements=replacements,
                                  dropped=[f.face_id for f in failures], actor=actor)
    n_orig = sum(1 for _, original in kept if original)
    return ReindexResult(
        source_model=source,
        target_model=spec.name,
        faces=store.count_faces(spec.name),
        from_originals=n_orig,
        from_thumbnails=len(kept) - n_orig,
        dropped=tuple(failures),
        vanished=switched.vanished,
        deleted=switched.deleted,
        checksum=store.checksum(spec.name).digest,
    )


def source_spec_of(model_id: str, model_dir: Path | None = None) -> ModelSpec | None:
    """The spec of the gallery's current model without loading weights (registered or a trained card), else None."""
    from faceid.indexer.models.spec import MODELS
    from faceid.indexer.models.trained import EMBEDDING_KIND, find_trained_folder, trained_model_spec

    if model_id in MODELS:
        return MODELS[model_id]
    folder = find_trained_folder(model_id, EMBEDDING_KIND, [model_dir] if model_dir is not None else [])
    try:
        return trained_model_spec(folder) if folder is not None else None
    except (FaceIdError, UnknownModel):
        return None


def _thumbnail_geometry_problem(source: str, source_spec: ModelSpec | None, target: ModelSpec) -> str | None:
    """Why thumbnails of `source` cannot stand in for crops of `target`, or None when they can."""
    if source_spec is None:
        return f"the crop geometry of {source!r} is unknown (its model card was not found)"
    if (source_spec.image_size, source_spec.margin) != (target.image_size, target.margin):
        return (f"{source!r} crops {source_spec.image_size} px with margin {source_spec.margin}, {target.name!r} "
                f"{target.image_size} px with margin {target.margin}")
    return None


def _index_originals(folder: Path, wanted: set[str]) -> dict[str, Path]:
    """sha256 of the file bytes → path, for the image files under `folder` that the gallery references."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidRequest(f"--originals {folder} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in wanted:
                found.setdefault(digest, path)
    return found


def _group_by_image(rows: Sequence[SourceFace]) -> list[tuple[str, list[SourceFace]]]:
    groups: dict[str, list[SourceFace]] = {}
    for row in rows:
        groups.setdefault(row.image_sha256, []).append(row)
    return list(groups.items())


def _decode(path: Path) -> Image.Image:
    from faceid.indexer.images import decode_image

    return decode_image(path.read_bytes()).image


def _box_only(row: SourceFace) -> Detection:
    """A detection carrying the stored box only: `FaceDetector.crop` uses nothing else."""
    from faceid.indexer.detection import Detection

    return Detection(box=row.box, probability=row.probability, landmarks=np.zeros((5, 2), np.float32))


def _crop_from_thumbnail(jpeg: bytes, size: int) -> NDArray[np.uint8]:
    """A stored thumbnail (the old aligned crop, downsized) back at the crop size, (3, size, size) uint8."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} faces of {m!r}" for m, n in sorted(counts.items()) if n) or "no faces"
