"""Faces in photos: facenet-pytorch's MTCNN finds them, and aligned crops are cut from the original photo.

Detection may run on a downscaled copy (`detect_max_side`): MTCNN's cost grows with the pixels of its
input, while the crop that the embedder sees is always cut from the full-resolution original, so a
large photo costs a small photo's detection without losing crop quality. Boxes and landmarks are mapped
back to original-image pixels before anyone sees them.

MTCNN only batches images of one size. Two ways are offered (see bench/detection_throughput.py):
`batching="size"` groups a call's images by their (downscaled) size, which gives exactly the result of
one-by-one detection and is the default; `batching="canvas"` pads every copy of a chunk onto one
canvas, so photos of different sizes share a forward pass (more useful on a GPU than on a CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import detect_face
from numpy.typing import NDArray
from PIL import Image

Box = tuple[float, float, float, float]

# MTCNN's own default minimum face (px). When a photo is downscaled for detection, the pyramid is not
# asked for faces smaller than this in the copy: asking for min_face_size·scale would make MTCNN
# upsample the copy back to the original's resolution and cost what full-resolution detection costs.
# So a copy at scale s finds faces of at least max(min_face_size, 20/s) original pixels.
_PYRAMID_FLOOR_PX = 20.0


@dataclass(frozen=True, eq=False)
class Detection:
    """One face, in pixels of the original (EXIF-oriented) image.

    `box` is (x1, y1, x2, y2) as floats and may reach past the image edges (MTCNN boxes do);
    `landmarks` is (5, 2) float32 (x, y): left eye, right eye, nose, left and right mouth corners.
    """

    box: Box
    probability: float
    landmarks: NDArray[np.float32]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The shorter side of the box: what `min_face_size` is compared with."""
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        return self.width * self.height


@dataclass(frozen=True)
class _Prepared:
    """A photo as MTCNN sees it: `pixels` (h, w, 3) uint8, the scale from original to copy, the pyramid minimum."""

    pixels: NDArray[np.uint8]
    scale_x: float
    scale_y: float
    min_size: float


class FaceDetector:
    """Finds faces with facenet-pytorch's MTCNN and cuts aligned crops the way `MTCNN(post_process=False)` does.

    Arguments:
        device: where the P/R/O-nets run ("cpu", "cuda", a torch.device).
        image_size: side of the square crop given to the embedder (the model card: 160).
        margin: border added around the box, in pixels of the `image_size` output (facenet-pytorch's
            semantics, not Sandberg's source-pixel margin; the model card: 20).
        min_face_size: smallest face to report, as the shorter box side in original-image pixels.
        min_probability: smallest MTCNN face probability to report. 0.95 because below it MTCNN's hits are
            mostly not faces (arms, patterns: the only non-face hit in shared/data/faces is p = 0.78) and
            blurred or profile faces that embed poorly; shared/data was labelled with this cut.
        detect_max_side: detect on a copy whose longer side is at most this many pixels (None: never
            downscale). Smaller is faster but misses faces smaller than 20 px in the copy (see above).
        batch_size: photos per MTCNN forward pass.
        batching: "size" (group equal-size copies; exact) or "canvas" (pad a chunk onto one canvas).
        thresholds, factor: MTCNN's stage thresholds and pyramid factor (its defaults).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        image_size: int = 160,
        margin: int = 20,
        min_face_size: int = 20,
        min_probability: float = 0.95,
        detect_max_side: int | None = None,
        *,
        batch_size: int = 8,
        batching: Literal["size", "canvas"] = "size",
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ) -> None:
        if margin >= image_size:
            raise ValueError(f"margin ({margin}) must be smaller than image_size ({image_size})")
        if detect_max_side is not None and detect_max_side < 32:
            raise ValueError(f"detect_max_side must be None or at least 32 px, got {detect_max_side}")
        if batching not in ("size", "canvas"):
            raise ValueError(f"batching must be 'size' or 'canvas', got {batching!r}")
        self.device = torch.device(device)
        self.image_size = image_size
        self.margin = margin
        self.min_face_size = min_face_size
        self.min_probability = min_probability
        self.detect_max_side = detect_max_side
        self.batch_size = max(1, batch_size)
        self.batching = batching
        self.thresholds = list(thresholds)
        self.factor = factor
        # MTCNN is used only for its three nets (weights ship in the wheel); detection calls detect_face
        # directly, with a pyramid minimum that depends on each photo's downscale.
        self._mtcnn = MTCNN(
            image_size=image_size, margin=margin, min_face_size=min_face_size, thresholds=self.thresholds,
            factor=factor, post_process=False, keep_all=True, device=self.device,
        ).eval()

    # --- detection ------------------------------------------------------------------------------------
    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Faces of each RGB photo, largest box first; one list per photo, in input order (maybe empty)."""
        prepared = [self._prepare(img) for img in images]
        found: list[list[Detection]] = [[] for _ in prepared]
        for indices in self._chunks(prepared):
            batch = self._stack([prepared[i].pixels for i in indices])
            boxes, points = self._run(batch, prepared[indices[0]].min_size)
            for i, b, p in zip(indices, boxes, points, strict=True):
                found[i] = self._to_detections(b, p, prepared[i])
        return found

    def detect_one(self, image: Image.Image) -> list[Detection]:
        """`detect([image])[0]`."""
        return self.detect([image])[0]

    def _prepare(self, img: Image.Image) -> _Prepared:
        if img.mode != "RGB":
            raise ValueError(f"FaceDetector expects RGB images (decode_image gives them), got mode {img.mode}")
        w, h = img.size
        scale = 1.0 if self.detect_max_side is None else min(1.0, self.detect_max_side / max(w, h))
        if scale >= 1.0:
            return _Prepared(np.asarray(img, dtype=np.uint8), 1.0, 1.0, float(self.min_face_size))
        cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
        # reducing_gap: a cheap integer reduce first, then a bilinear resize (fast and alias-free)
        copy = img.resize((cw, ch), Image.Resampling.BILINEAR, reducing_gap=2.0)
        floor = min(float(self.min_face_size), _PYRAMID_FLOOR_PX)
        min_size = max(self.min_face_size * scale, floor)
        return _Prepared(np.asarray(copy, dtype=np.uint8), cw / w, ch / h, min_size)

    def _chunks(self, prepared: list[_Prepared]) -> list[list[int]]:
        """Indices of photos that go through MTCNN together (one pyramid minimum, one size unless canvas)."""
        groups: dict[tuple[float, ...], list[int]] = {}
        for i, p in enumerate(prepared):
            key = (p.min_size,) if self.batching == "canvas" else (p.min_size, *p.pixels.shape)
            groups.setdefault(key, []).append(i)
        return [ids[k : k + self.batch_size] for ids in groups.values() for k in range(0, len(ids), self.batch_size)]

    @staticmethod
    def _stack(arrays: list[NDArray[np.uint8]]) -> NDArray[np.uint8]:
        """(n, H, W, 3) uint8; arrays of different sizes go top-left on a black canvas of the largest size."""
        if all(a.shape == arrays[0].shape for a in arrays):
            return np.stack(arrays)
        height = max(a.shape[0] for a in arrays)
        width = max(a.shape[1] for a in arrays)
        canvas = np.zeros((len(arrays), height, width, 3), np.uint8)
        for k, a in enumerate(arrays):
            canvas[k, : a.shape[0], : a.shape[1]] = a
        return canvas

    def _run(self, batch: NDArray[np.uint8], min_size: float) -> tuple[list[NDArray], list[NDArray]]:
        """MTCNN on (n, H, W, 3) uint8: per photo (k, 5) boxes+probability and (k, 5, 2) landmarks, copy pixels."""
        m = self._mtcnn
        with torch.inference_mode():
            boxes, points = detect_face(batch, min_size, m.pnet, m.rnet, m.onet, self.thresholds, self.factor, self.device)
        return list(boxes), list(points)

    def _to_detections(self, boxes: NDArray, points: NDArray, prep: _Prepared) -> list[Detection]:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
        points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
        out: list[Detection] = []
        for row, pts in zip(boxes, points, strict=True):
            prob = float(row[4])
            if prob < self.min_probability:
                continue
            if prep.scale_x == 1.0 and prep.scale_y == 1.0:
                # keep MTCNN's float32 values exactly, so crops equal facenet-pytorch's bit for bit
                box = tuple(float(v) for v in row[:4])
                landmarks = pts.copy()
            else:
                sx, sy = prep.scale_x, prep.scale_y
                box = (float(row[0]) / sx, float(row[1]) / sy, float(row[2]) / sx, float(row[3]) / sy)
                landmarks = (pts / np.array([sx, sy], np.float32)).astype(np.float32)
            det = Detection(box=box, probability=prob, landmarks=landmarks)  # type: ignore[arg-type]
            if det.size >= self.min_face_size:
                out.append(det)
        out.sort(key=lambda d: d.area, reverse=True)
        return out

    # --- cropping -------------------------------------------------------------------------------------
    def crop(self, image: Image.Image, detection: Detection) -> NDArray[np.uint8]:
        """The aligned crop (3, image_size, image_size) uint8 RGB, cut from the original photo.

        Same arithmetic as `facenet_pytorch.extract_face` (margin in output pixels, float32 box, truncation
        to int, PIL bilinear resize), so it equals `MTCNN(image_size, margin, post_process=False)(image)`
        for the same box.
        """
        size, margin = self.image_size, self.margin
        x1, y1, x2, y2 = np.asarray(detection.box, dtype=np.float32)
        mx = margin * (x2 - x1) / (size - margin)
        my = margin * (y2 - y1) / (size - margin)
        width, height = image.size
        region = (
            int(max(x1 - mx / 2, 0)),
            int(max(y1 - my / 2, 0)),
            int(min(x2 + mx / 2, width)),
            int(min(y2 + my / 2, height)),
        )
        face = image.crop(region).resize((size, size), Image.Resampling.BILINEAR)
        return np.ascontiguousarray(np.asarray(face, dtype=np.uint8).transpose(2, 0, 1))

    def crops(self, image: Image.Image, detections: Sequence[Detection]) -> NDArray[np.uint8]:
        """(n, 3, image_size, image_size) uint8: `crop` for each detection of one photo."""
        if not detections:
            return np.zeros((0, 3, self.image_size, self.image_size), np.uint8)
        return np.stack([self.crop(image, d) for d in detections])
