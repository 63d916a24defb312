"""bytes → decoded image → faces → aligned crops → embeddings: the front of the data path, for one model.

The pipeline owns the detector and the embedder of the active model. Decoding runs on the calling
thread; detection and embedding are accelerator work and go through the runner the engine was given
(the server's priority scheduler), batched.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from faceid.indexer.batching import MicroBatcher
from faceid.indexer.config import AcceleratorRunner, EngineConfig
from faceid.indexer.detection import Detection, FaceDetector
from faceid.indexer.embedding import Embedder
from faceid.indexer.images import DecodedImage, ImageLimits, decode_image
from faceid.indexer.results import DetectedFace


@dataclass
class AnalyzedImage:
    """One photo after detection (and, where asked, embedding). Faces are largest first."""

    image: DecodedImage
    detections: list[Detection]
    embeddings: NDArray[np.float32] | None = None  # (len(detections), d) when embedded
    crops: NDArray[np.uint8] | None = None  # (len(detections), 3, s, s)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def faces(self) -> list[DetectedFace]:
        return [to_detected_face(d) for d in self.detections]


def to_detected_face(d: Detection) -> DetectedFace:
    landmarks = tuple((float(x), float(y)) for x, y in np.asarray(d.landmarks).reshape(-1, 2)) if d.landmarks is not None else ()
    return DetectedFace(box=tuple(float(v) for v in d.box), probability=float(d.probability), landmarks=landmarks)  # type: ignore[arg-type]


def box_side(d: Detection) -> float:
    """The shorter side of a detection's box, the size that limits recognition quality."""
    x1, y1, x2, y2 = d.box
    return float(min(x2 - x1, y2 - y1))


def thumbnail_jpeg(crop: NDArray[np.uint8], size: int) -> bytes:
    """A small JPEG of an aligned crop (3, s, s) uint8, for reports."""
    img = Image.fromarray(np.ascontiguousarray(crop.transpose(1, 2, 0)))
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class FacePipeline:
    def __init__(self, *, detector: FaceDetector, embedder: Embedder, config: EngineConfig, runner: AcceleratorRunner) -> None:
        self.detector = detector
        self.embedder = embedder
        self.limits = ImageLimits(max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels)
        self.max_faces = config.max_faces_per_image
        self.runner = runner
        # One batcher per priority class: concurrent requests of a class share detection and embedding
        # batches, with one worker per accelerator slot (several batches at once on a many-slot CPU); the
        # runner (the server's scheduler) decides which class uses the accelerator next. The batcher hands
        # the runner its whole turn, so photos of callers cancelled while the turn waited for
        # the accelerator are dropped before detection (batching.py).
        self._batchers = {
            kind: MicroBatcher(
                lambda items: self._analyze_now(items, True, True),
                max_batch=config.detect_batch_size,
                name=f"faceid-{kind}-batcher",
                run=lambda turn, kind=kind: self.runner(kind, turn),
                workers=config.batch_workers,
            )
            for kind in ("interactive", "bulk")
        }

    def decode(self, data: bytes) -> DecodedImage:
        return decode_image(data, self.limits)

    def analyze(self, images: Sequence[DecodedImage], *, kind: str) -> list[AnalyzedImage]:
        """Detect and embed the faces of decoded photos, batched with other callers' photos of the same kind.

        kind: "interactive" (Verify/Identify/Embed, unary Enroll) or "bulk" (EnrollStream). Crops are kept
        for thumbnails. Raises errors.Cancelled when the current call is cancelled first (cancellation.py).
        """
        return self._batchers[kind].submit_many(list(images))

    def batcher(self, kind: str) -> MicroBatcher[DecodedImage, AnalyzedImage]:
        """The batcher of one class, for its counters (`batches`, `items`, `queued`): metrics and tests."""
        return self._batchers[kind]

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()

    def _analyze_now(self, images: list[DecodedImage], embed: bool, keep_crops: bool) -> list[AnalyzedImage]:
        t0 = time.perf_counter()
        detections = self.detector.detect([im.image for im in images])
        t1 = time.perf_counter()
        results = [AnalyzedImage(im, dets[: self.max_faces]) for im, dets in zip(images, detections, strict=True)]
        if not embed:
            for r in results:
                r.timings["detect"] = (t1 - t0) / max(len(images), 1)
            return results
        crops = [self.detector.crop(r.image.image, d) for r in results for d in r.detections]
        size = self.detector.image_size
        stacked = np.stack(crops) if crops else np.zeros((0, 3, size, size), np.uint8)
        vectors = self.embedder.embed(stacked) if crops else np.zeros((0, self.embedder.dimension), np.float32)
        t2 = time.perf_counter()
        start = 0
        for r in results:
            n = len(r.detections)
            r.embeddings = vectors[start : start + n]
            if keep_crops:
                r.crops = stacked[start : start + n]
            start += n
            r.timings["detect"] = (t1 - t0) / len(images)
            r.timings["embed"] = (t2 - t1) / len(images)
        return results
