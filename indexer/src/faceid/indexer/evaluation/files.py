"""Image files → aligned crops and embeddings with the service's own detector and embedder (one model).

Evaluation must measure what the service does, so this uses the same `decode_image` (EXIF, limits),
`FaceDetector` (MTCNN at the card's crop size and margin) and `Embedder` (the card's standardisation).
A file that cannot be read or shows no face becomes a `DetectionFailure`, reported, never dropped silently;
a file with several faces uses the largest, as an enrolment photo would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceid.indexer.errors import FaceIdError
from faceid.indexer.evaluation.embedded import DetectionFailure, EmbeddedImages
from faceid.indexer.models.spec import ModelSpec


@dataclass(frozen=True)
class CroppedFiles:
    """`images` with the aligned crops (n, 3, s, s) uint8 of its rows (for training), and faces per file."""

    images: EmbeddedImages
    crops: NDArray[np.uint8]
    faces_found: tuple[int, ...]  # detections per embedded file (> 1: the largest was used)


class FileEmbedder:
    """Detector + embedder of one model. `network` is the loaded embedding network (any nn.Module)."""

    def __init__(self, spec: ModelSpec, network: Any, device: str = "cpu", batch_size: int = 16) -> None:
        from faceid.indexer.detection import FaceDetector
        from faceid.indexer.embedding import Embedder

        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        self.detector = FaceDetector(device=device, image_size=spec.image_size, margin=spec.margin)
        self.embedder = Embedder(network, spec.preprocessing, device=device, batch_size=32)

    def crop_files(self, paths: Sequence[Path], progress: bool = True) -> CroppedFiles:
        """Decode, detect and embed every file once (duplicates in `paths` are embedded once)."""
        from tqdm.auto import tqdm

        from faceid.indexer.images import decode_image

        unique = list(dict.fromkeys(Path(p) for p in paths))
        kept: list[Path] = []
        crops: list[NDArray[np.uint8]] = []
        counts: list[int] = []
        failures: list[DetectionFailure] = []
        bar = tqdm(total=len(unique), desc=f"detect/{self.spec.name}", unit="img", disable=not progress)
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start : start + self.batch_size]
            decoded = []
            for path in chunk:
                try:
                    decoded.append((path, decode_image(path.read_bytes()).image))
                except FileNotFoundError:
                    failures.append(DetectionFailure(path, "file not found"))
                except (FaceIdError, OSError) as exc:
                    failures.append(DetectionFailure(path, f"unreadable: {exc}"))
            found = self.detector.detect([img for _, img in decoded]) if decoded else []
            for (path, img), dets in zip(decoded, found, strict=True):
                if not dets:
                    failures.append(DetectionFailure(
                        path, f"no face found (MTCNN probability >= {self.detector.min_probability}, "
                              f"side >= {self.detector.min_face_size} px)"))
                    continue
                kept.append(path)
                crops.append(self.detector.crop(img, dets[0]))  # largest first
                counts.append(len(dets))
            bar.update(len(chunk))
        bar.close()
        size = self.spec.image_size
        stacked = np.stack(crops) if crops else np.zeros((0, 3, size, size), np.uint8)
        vectors = self.embedder.embed(stacked) if crops else np.zeros((0, self.spec.dimension), np.float32)
        images = EmbeddedImages(self.spec.name, tuple(kept), vectors, tuple(failures))
        return CroppedFiles(images, stacked, tuple(counts))

    def embed_files(self, paths: Sequence[Path], progress: bool = True) -> EmbeddedImages:
        return self.crop_files(paths, progress).images


def resolve_model(model_id: str, model_dir: Path | None = None, allow_fetch: bool = True) -> tuple[ModelSpec, Path]:
    """(spec, verified folder) of a registered model or of a trained one saved by `faceid train`
    (see faceid.indexer.models.trained: `model_dir` first, then FACEID_MODEL_DIR and the user cache)."""
    from faceid.indexer.models.trained import resolve_model as registry_resolve

    return registry_resolve(model_id, model_dir=model_dir, allow_fetch=allow_fetch)


def file_embedder(model_id: str, device: str = "auto", model_dir: Path | None = None) -> FileEmbedder:
    """A FileEmbedder for `model_id` on `device` ("auto": CUDA when present)."""
    from faceid.indexer.models import load_embedding_network
    from faceid.indexer.runtime import resolve_device

    spec, folder = resolve_model(model_id, model_dir)
    dev = resolve_device(device)
    return FileEmbedder(spec, load_embedding_network(spec, folder, dev, verify=False), dev)
