"""What the engine answers: plain, typed, immutable records (the server converts them to proto).

Distances are Euclidean distances between L2-normalised embeddings, in [0, 2];
similarity is the cosine similarity, 1 - d²/2.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

BoxTuple = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the oriented image


def similarity_from_distance(distance: float) -> float:
    """Cosine similarity of two unit vectors that are `distance` apart (L2)."""
    return 1.0 - distance * distance / 2.0


class ImageStatus(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    FACE_TOO_SMALL = "face_too_small"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"
    INVALID = "invalid"


class MultiFacePolicy(enum.Enum):
    """What a labeled enrolment does with a photo of several faces (see faceid.proto)."""

    REJECT = "reject"
    LARGEST = "largest"


@dataclass(frozen=True)
class DetectedFace:
    box: BoxTuple
    probability: float
    landmarks: tuple[tuple[float, float], ...] = ()

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class ImageOutcome:
    """The fate of one enrolment image."""

    index: int
    status: ImageStatus
    message: str = ""
    image_sha256: str = ""
    face_id: int | None = None  # the stored (or already stored) face
    faces: tuple[DetectedFace, ...] = ()  # every face found; the stored one first
    face_ids: tuple[int, ...] = ()  # all faces stored / on record for this image

    @property
    def accepted(self) -> bool:
        return self.status in (ImageStatus.STORED, ImageStatus.DUPLICATE)


@dataclass(frozen=True)
class EnrollResult:
    identity_id: int
    identity: str
    created: bool
    outcomes: tuple[ImageOutcome, ...]
    faces_on_record: int
    model: str


@dataclass(frozen=True)
class StreamEnrollResult:
    """One image of a bulk enrolment; identity fields are None for unlabeled faces."""

    outcome: ImageOutcome
    identity_id: int | None
    identity: str | None
    model: str


@dataclass(frozen=True)
class VerifyResult:
    match: bool
    distance: float
    similarity: float
    threshold: float
    model: str
    face_a: DetectedFace
    faces_in_a: int
    face_b: DetectedFace | None = None
    faces_in_b: int = 0
    identity: str | None = None
    matched_face_id: int | None = None
    probability: float | None = None
    decided_by: str = "distance"  # or "siamese:<head id>" when a Siamese head decided `match`


@dataclass(frozen=True)
class Candidate:
    identity: str
    identity_id: int
    distance: float
    similarity: float
    face_id: int
    probability: float | None = None


@dataclass(frozen=True)
class IdentifiedFace:
    face: DetectedFace
    unknown: bool
    identity: str | None
    identity_id: int | None
    distance: float
    similarity: float
    candidates: tuple[Candidate, ...]
    probability: float | None = None


@dataclass(frozen=True)
class IdentifyResult:
    faces: tuple[IdentifiedFace, ...]
    model: str
    threshold: float
    gallery_faces: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: decode, detect, embed, search


@dataclass(frozen=True)
class EmbeddedFace:
    face: DetectedFace
    embedding: NDArray[np.float32]  # (d,), unit length


@dataclass(frozen=True)
class EmbedResult:
    faces: tuple[EmbeddedFace, ...]
    model: str
    dimension: int


@dataclass(frozen=True)
class FaceInfo:
    id: int
    model: str
    image_sha256: str
    box: BoxTuple
    probability: float
    created_at: datetime
    identity_id: int | None


@dataclass(frozen=True)
class IdentityInfo:
    id: int
    name: str
    metadata: dict[str, str]
    face_count: int
    created_at: datetime
    updated_at: datetime
    faces: tuple[FaceInfo, ...] = ()


@dataclass(frozen=True)
class IdentityPage:
    identities: tuple[IdentityInfo, ...]
    next_page_token: str
    total_count: int


@dataclass(frozen=True)
class DeleteResult:
    identity_id: int
    identity: str
    faces_deleted: int


@dataclass(frozen=True)
class ModelSummary:
    id: str
    architecture: str
    dimension: int
    default_threshold: float
    threshold_source: str  # "model card", "server config" or "calibration"
    preprocessing: str


@dataclass(frozen=True)
class IndexStatus:
    backend: str
    device: str
    vectors: int
    consistent: bool
    checksum: str
    checked_at: datetime | None


@dataclass(frozen=True)
class GalleryStats:
    identities: int
    faces: int
    unlabeled_faces: int
    model: ModelSummary
    index: IndexStatus
    device: str
    database: str
    extra: dict[str, float] = field(default_factory=dict)
