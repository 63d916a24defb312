"""Detections of every photo in shared/data by the service's own front end, computed once per test process.

test_detection.py and test_embedding.py both need them; MTCNN costs ~0.1–0.3 s per photo on these CPUs,
so each detector configuration runs over the photos once, however many tests look at the result.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

from conftest import FACES_DIR, GROUP_DIR, NO_FACE_DIR
from faceid.indexer.detection import Detection, FaceDetector
from faceid.indexer.images import DecodedImage, decode_image

DOWNSCALED_MAX_SIDE = 384  # harsher than the service default: every group photo (<= 500 px) is downscaled too


@dataclass(frozen=True)
class Photo:
    path: Path
    decoded: DecodedImage

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


@functools.cache
def face_photos() -> tuple[Photo, ...]:
    return tuple(Photo(p, decode_image(p.read_bytes())) for p in sorted(FACES_DIR.glob("*/*.jpg")))


@functools.cache
def group_photos() -> tuple[tuple[Photo, int], ...]:
    """(photo, expected face count) from faces_group/counts.csv."""
    with (GROUP_DIR / "counts.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    paths = [(GROUP_DIR / r["file"], int(r["faces"])) for r in rows]
    return tuple((Photo(p, decode_image(p.read_bytes())), n) for p, n in paths)


@functools.cache
def no_face_photos() -> tuple[Photo, ...]:
    return tuple(Photo(p, decode_image(p.read_bytes())) for p in sorted(NO_FACE_DIR.glob("*.jpg")))


def all_photos() -> tuple[Photo, ...]:
    return face_photos() + tuple(p for p, _ in group_photos()) + no_face_photos()


@functools.cache
def detector(detect_max_side: int | None = None) -> FaceDetector:
    return FaceDetector("cpu", image_size=160, margin=20, min_face_size=20, min_probability=0.95, detect_max_side=detect_max_side)


@functools.cache
def detections() -> dict[str, list[Detection]]:
    """Photo name → faces found at full resolution (largest first), for every photo in faces/, faces_group/, no_face/."""
    photos = all_photos()
    found = detector(None).detect([p.decoded.image for p in photos])
    return {p.name: d for p, d in zip(photos, found, strict=True)}


def larger_than(max_side: int) -> tuple[Photo, ...]:
    """The photos a detector with `detect_max_side=max_side` downscales (the others take the full-resolution path)."""
    return tuple(p for p in all_photos() if max(p.decoded.width, p.decoded.height) > max_side)


@functools.cache
def downscaled_detections(max_side: int = DOWNSCALED_MAX_SIDE) -> dict[str, list[Detection]]:
    """Photo name → faces found on a copy whose longer side is `max_side`, for the photos larger than that."""
    photos = larger_than(max_side)
    found = detector(max_side).detect([p.decoded.image for p in photos])
    return {p.name: d for p, d in zip(photos, found, strict=True)}
