"""What goes into the gallery store and what comes out: frozen dataclasses, never ORM rows.

Results are copied out of the session before the transaction ends, so callers can keep them across threads
and after the store is closed.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceid.indexer.errors import InvalidRequest
from faceid.indexer.results import BoxTuple
from faceid.indexer.store.models import (
    MAX_MODEL_ID_LENGTH,
    MAX_NAME_LENGTH,
    AuditEntry,
    Face,
    Identity,
    ModelCalibration,
)
from faceid.indexer.store.vectors import unit_norm_violations

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def box_key(box: BoxTuple) -> tuple[int, int, int, int]:
    """The box rounded to whole pixels: the face's part of the store's unique key."""
    return (round(box[0]), round(box[1]), round(box[2]), round(box[3]))


@dataclass(frozen=True)
class NewFace:
    """A face to store: one embedding of one detected face of one image.

    embedding: (d,) float32, L2-normalised (the store refuses anything else: the index built from it would
    otherwise rank wrongly without an error). thumbnail: a small JPEG for reports, or None.
    """

    model_id: str
    embedding: NDArray[np.float32]
    image_sha256: str
    box: BoxTuple
    probability: float
    thumbnail: bytes | None = None

    def __post_init__(self) -> None:
        if not self.model_id or len(self.model_id) > MAX_MODEL_ID_LENGTH:
            raise InvalidRequest(f"model id must be 1..{MAX_MODEL_ID_LENGTH} characters, got {self.model_id!r}")
        emb = self.embedding
        if not isinstance(emb, np.ndarray) or emb.dtype != np.float32 or emb.ndim != 1 or emb.size == 0:
            raise InvalidRequest("a face embedding must be a non-empty 1-d float32 numpy array")
        if unit_norm_violations(emb.reshape(1, -1)).size:
            raise InvalidRequest(
                f"a face embedding must be finite and L2-normalised (norm {float(np.linalg.norm(emb)):.4f}): "
                "normalise at the embedding stage"
            )
        if not _SHA256_HEX.fullmatch(self.image_sha256):
            raise InvalidRequest("image_sha256 must be 64 lowercase hex characters (hashlib.sha256(...).hexdigest())")
        if len(self.box) != 4 or not all(math.isfinite(v) for v in self.box):
            raise InvalidRequest(f"a face box is 4 finite numbers x1, y1, x2, y2, got {self.box!r}")
        if not (self.box[2] > self.box[0] and self.box[3] > self.box[1]):
            raise InvalidRequest(f"a face box needs x2 > x1 and y2 > y1, got {self.box!r}")
        if not (0.0 <= self.probability <= 1.0):
            raise InvalidRequest(f"a detection probability is in [0, 1], got {self.probability!r}")

    @property
    def key(self) -> tuple[str, str, int, int, int, int]:
        return (self.model_id, self.image_sha256, *box_key(self.box))


class AddStatus(enum.Enum):
    """What storing one NewFace did."""

    CREATED = "created"  # a new row: add it to the vector index
    EXISTING = "existing"  # already stored (same model, image, box) and already this identity's: nothing changed
    LABELED = "labeled"  # was stored unlabeled; now belongs to the identity (the vector index is unchanged)
    CONFLICT = "conflict"  # already stored under another identity: left as it is


@dataclass(frozen=True)
class FaceAdded:
    face_id: int
    status: AddStatus
    identity_id: int | None  # the row's identity after the call (another one for CONFLICT)

    @property
    def created(self) -> bool:
        return self.status is AddStatus.CREATED


@dataclass(frozen=True)
class IdentityRow:
    id: int
    name: str
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime
    face_count: int  # faces on record (of the model asked for, or of every model)

    @classmethod
    def of(cls, ident: Identity, face_count: int) -> IdentityRow:
        return cls(ident.id, ident.name, dict(ident.metadata_), ident.created_at, ident.updated_at, face_count)


@dataclass(frozen=True)
class FaceRow:
    id: int
    identity_id: int | None
    model_id: str
    dim: int
    image_sha256: str
    box: BoxTuple
    probability: float
    created_at: datetime

    @classmethod
    def of(cls, face: Face) -> FaceRow:
        box = (face.x1, face.y1, face.x2, face.y2)
        return cls(
            face.id,
            face.identity_id,
            face.model_id,
            face.dim,
            face.image_sha256,
            box,
            face.detection_probability,
            face.created_at,
        )


@dataclass(frozen=True)
class EnrollStored:
    """The store's side of an enrolment. `identity` is None when it did not exist and nothing was written."""

    identity: IdentityRow | None
    created: bool
    faces: tuple[FaceAdded, ...]

    @property
    def new_face_ids(self) -> list[int]:
        return [f.face_id for f in self.faces if f.created]


@dataclass(frozen=True)
class IdentityListing:
    identities: tuple[IdentityRow, ...]
    next_after_name: str | None  # pass as `after_name` for the next page; None on the last page
    total_count: int  # identities matching the filter, all pages together


@dataclass(frozen=True)
class DeletedIdentity:
    identity: IdentityRow
    faces_by_model: dict[str, tuple[int, ...]]  # erased face ids per model: remove them from each index

    @property
    def face_ids(self) -> list[int]:
        return sorted(i for ids in self.faces_by_model.values() for i in ids)


@dataclass(frozen=True)
class AssignResult:
    identity: IdentityRow
    created: bool
    face_ids: tuple[int, ...]


@dataclass(frozen=True)
class MergeResult:
    identity: IdentityRow  # the target, now holding the source's faces
    moved_face_ids: tuple[int, ...]
    removed_identity_id: int


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditRecord:
        return cls(entry.id, entry.at, entry.actor, entry.action, entry.subject, dict(entry.details))


@dataclass(frozen=True)
class Calibration:
    model_id: str
    threshold: float
    source: str
    logistic_a: float | None
    logistic_b: float | None
    updated_at: datetime

    @classmethod
    def of(cls, row: ModelCalibration) -> Calibration:
        return cls(row.model_id, row.threshold, row.source, row.logistic_a, row.logistic_b, row.updated_at)


def check_name(name: str, what: str = "identity name") -> str:
    """Names every dialect can store alike (PostgreSQL text cannot hold NUL; VARCHAR(255) is enforced there)."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"an {what} must be 1..{MAX_NAME_LENGTH} characters")
    if "\x00" in name:
        raise InvalidRequest(f"an {what} cannot contain NUL characters")
    return name


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidRequest("identity metadata maps strings to strings")
    if any("\x00" in k or "\x00" in v for k, v in metadata.items()):
        raise InvalidRequest("identity metadata cannot contain NUL characters")
    return dict(metadata)
