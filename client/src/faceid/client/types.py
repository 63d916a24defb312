"""What the client returns: frozen dataclasses mirroring faceid.v1 answers (plain Python, no numpy).

Each has `from_proto(message)`; `to_dict()` gives JSON-ready data (the CLI's --json output).
Distances are L2 distances between unit embeddings in [0, 2]; similarity = 1 - d²/2.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faceid.v1 import faceid_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp


def _ts(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    value: Timestamp = getattr(message, field)
    return value.ToDatetime(tzinfo=UTC)


def _opt(message: Any, field: str) -> float | None:
    return getattr(message, field) if message.HasField(field) else None


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return _plain(self)  # type: ignore[no-any-return]


class ImageStatus(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    FACE_TOO_SMALL = "face_too_small"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"
    INVALID = "invalid"
    UNSPECIFIED = "unspecified"

    @classmethod
    def from_proto(cls, value: int) -> ImageStatus:
        name = pb.ImageStatus.Name(value).removeprefix("IMAGE_STATUS_")
        return cls[name] if name in cls.__members__ else cls.UNSPECIFIED


class MultiFacePolicy(enum.Enum):
    """What a labeled enrolment does with a photo of several faces (server default: REJECT)."""

    REJECT = "reject"
    LARGEST = "largest"

    def to_proto(self) -> int:
        return pb.MULTI_FACE_POLICY_REJECT if self is MultiFacePolicy.REJECT else pb.MULTI_FACE_POLICY_LARGEST


@dataclass(frozen=True)
class Box(_Record):
    """Pixels of the (orientation-corrected) image; (x1, y1) top-left."""

    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_proto(cls, m: pb.BoundingBox) -> Box:
        return cls(m.x1, m.y1, m.x2, m.y2)

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


@dataclass(frozen=True)
class Face(_Record):
    box: Box
    probability: float
    landmarks: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_proto(cls, m: pb.DetectedFace) -> Face:
        return cls(Box.from_proto(m.box), m.probability, tuple((p.x, p.y) for p in m.landmarks))


@dataclass(frozen=True)
class ImageResult(_Record):
    index: int
    status: ImageStatus
    message: str
    image_sha256: str
    face_id: int | None
    faces: tuple[Face, ...]
    face_ids: tuple[int, ...]

    @property
    def accepted(self) -> bool:
        return self.status in (ImageStatus.STORED, ImageStatus.DUPLICATE)

    @classmethod
    def from_proto(cls, m: pb.ImageResult) -> ImageResult:
        return cls(
            m.index, ImageStatus.from_proto(m.status), m.message, m.image_sha256, m.face_id or None,
            tuple(Face.from_proto(f) for f in m.faces), tuple(m.face_ids),
        )


@dataclass(frozen=True)
class EnrollResult(_Record):
    identity_id: int
    identity: str
    created: bool
    results: tuple[ImageResult, ...]
    faces_on_record: int
    model: str

    @classmethod
    def from_proto(cls, m: pb.EnrollResponse) -> EnrollResult:
        return cls(
            m.identity_id, m.identity, m.created, tuple(ImageResult.from_proto(r) for r in m.results),
            m.faces_on_record, m.model,
        )


@dataclass(frozen=True)
class StreamEnrollResult(_Record):
    client_ref: str
    result: ImageResult
    identity_id: int | None
    identity: str | None
    model: str

    @classmethod
    def from_proto(cls, m: pb.EnrollStreamResponse) -> StreamEnrollResult:
        return cls(m.client_ref, ImageResult.from_proto(m.result), m.identity_id or None, m.identity or None, m.model)


@dataclass(frozen=True)
class VerifyResult(_Record):
    match: bool
    distance: float
    similarity: float
    threshold: float
    model: str
    face_a: Face
    faces_in_image_a: int
    face_b: Face | None
    faces_in_image_b: int
    identity: str | None
    matched_face_id: int | None
    probability: float | None
    decided_by: str = "distance"  # or "siamese:<head id>" when the server's Siamese head decided `match`

    @classmethod
    def from_proto(cls, m: pb.VerifyResponse) -> VerifyResult:
        return cls(
            m.match, m.distance, m.similarity, m.threshold, m.model, Face.from_proto(m.face_a), m.faces_in_image_a,
            Face.from_proto(m.face_b) if m.HasField("face_b") else None, m.faces_in_image_b,
            m.identity or None, m.matched_face_id or None, _opt(m, "probability"), m.decided_by or "distance",
        )


@dataclass(frozen=True)
class Candidate(_Record):
    identity: str
    identity_id: int
    distance: float
    similarity: float
    face_id: int
    probability: float | None

    @classmethod
    def from_proto(cls, m: pb.Candidate) -> Candidate:
        return cls(m.identity, m.identity_id, m.distance, m.similarity, m.face_id, _opt(m, "probability"))


@dataclass(frozen=True)
class IdentifiedFace(_Record):
    face: Face
    unknown: bool
    identity: str | None  # None when unknown
    identity_id: int | None
    distance: float
    similarity: float
    candidates: tuple[Candidate, ...]
    probability: float | None

    @classmethod
    def from_proto(cls, m: pb.IdentifiedFace) -> IdentifiedFace:
        return cls(
            Face.from_proto(m.face), m.unknown, m.identity or None, m.identity_id or None, m.distance,
            m.similarity, tuple(Candidate.from_proto(c) for c in m.candidates), _opt(m, "probability"),
        )


@dataclass(frozen=True)
class IdentifyResult(_Record):
    faces: tuple[IdentifiedFace, ...]  # one per face found, largest first
    model: str
    threshold: float
    gallery_faces: int

    @property
    def identities(self) -> list[str | None]:
        """The name given to each face (None = unknown), in the order of `faces`."""
        return [f.identity for f in self.faces]

    @classmethod
    def from_proto(cls, m: pb.IdentifyResponse) -> IdentifyResult:
        return cls(tuple(IdentifiedFace.from_proto(f) for f in m.faces), m.model, m.threshold, m.gallery_faces)


@dataclass(frozen=True)
class EmbeddedFace(_Record):
    face: Face
    embedding: tuple[float, ...]  # L2-normalised

    @classmethod
    def from_proto(cls, m: pb.EmbeddedFace) -> EmbeddedFace:
        return cls(Face.from_proto(m.face), tuple(m.embedding))


@dataclass(frozen=True)
class EmbedResult(_Record):
    faces: tuple[EmbeddedFace, ...]
    model: str
    dimension: int

    @classmethod
    def from_proto(cls, m: pb.EmbedResponse) -> EmbedResult:
        return cls(tuple(EmbeddedFace.from_proto(f) for f in m.faces), m.model, m.dimension)


@dataclass(frozen=True)
class FaceRecord(_Record):
    id: int
    model: str
    image_sha256: str
    box: Box
    detection_probability: float
    created_at: datetime | None
    identity_id: int | None

    @classmethod
    def from_proto(cls, m: pb.FaceRecord) -> FaceRecord:
        return cls(
            m.id, m.model, m.image_sha256, Box.from_proto(m.box), m.detection_probability, _ts(m, "created_at"),
            m.identity_id or None,
        )


@dataclass(frozen=True)
class Identity(_Record):
    id: int
    name: str
    metadata: dict[str, str]
    face_count: int
    created_at: datetime | None
    updated_at: datetime | None
    faces: tuple[FaceRecord, ...] = ()  # GetIdentity only

    @classmethod
    def from_proto(cls, m: pb.Identity) -> Identity:
        return cls(
            m.id, m.name, dict(m.metadata), m.face_count, _ts(m, "created_at"), _ts(m, "updated_at"),
            tuple(FaceRecord.from_proto(f) for f in m.faces),
        )


@dataclass(frozen=True)
class IdentityPage(_Record):
    identities: tuple[Identity, ...]
    next_page_token: str  # empty on the last page
    total_count: int

    @classmethod
    def from_proto(cls, m: pb.ListIdentitiesResponse) -> IdentityPage:
        return cls(tuple(Identity.from_proto(i) for i in m.identities), m.next_page_token, m.total_count)


@dataclass(frozen=True)
class DeleteResult(_Record):
    identity_id: int
    identity: str
    faces_deleted: int

    @classmethod
    def from_proto(cls, m: pb.DeleteIdentityResponse) -> DeleteResult:
        return cls(m.identity_id, m.identity, m.faces_deleted)


@dataclass(frozen=True)
class ModelInfo(_Record):
    id: str
    architecture: str
    dimension: int
    default_threshold: float
    threshold_source: str
    preprocessing: str

    @classmethod
    def from_proto(cls, m: pb.ModelInfo) -> ModelInfo:
        return cls(m.id, m.architecture, m.dimension, m.default_threshold, m.threshold_source, m.preprocessing)


@dataclass(frozen=True)
class IndexInfo(_Record):
    backend: str
    device: str
    vectors: int
    consistent: bool
    checksum: str
    checked_at: datetime | None

    @classmethod
    def from_proto(cls, m: pb.IndexInfo) -> IndexInfo:
        return cls(m.backend, m.device, m.vectors, m.consistent, m.checksum, _ts(m, "checked_at"))


@dataclass(frozen=True)
class Stats(_Record):
    identities: int
    faces: int
    unlabeled_faces: int
    model: ModelInfo
    index: IndexInfo
    device: str
    version: str
    database: str

    @classmethod
    def from_proto(cls, m: pb.Stats) -> Stats:
        return cls(
            m.identities, m.faces, m.unlabeled_faces, ModelInfo.from_proto(m.model), IndexInfo.from_proto(m.index),
            m.device, m.version, m.database,
        )
