"""Switching a gallery from one model id to another in one transaction (the store side of `faceid reindex`).

The gallery never mixes model ids: the new model's rows are written and the old model's rows deleted in the same
commit, so every reader sees either the old gallery or the new one. Identity links are read from the old rows
*inside* that transaction, so a rename, merge or naming done while the faces were being re-embedded is kept;
a face added meanwhile has no new vector and makes the switch refuse (run it again), and a face deleted meanwhile
is simply not carried over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from faceid.indexer.errors import FailedPrecondition, InvalidRequest
from faceid.indexer.store.models import Face, Thumbnail
from faceid.indexer.store.records import BoxTuple, NewFace
from faceid.indexer.store.writes import _insert_faces, audit

_IN_CHUNK = 500


@dataclass(frozen=True)
class SourceFace:
    """A stored face to re-embed: where it came from, and its thumbnail (None when thumbnails were off)."""

    face_id: int
    identity_id: int | None
    image_sha256: str
    box: BoxTuple
    probability: float
    thumbnail: bytes | None


@dataclass(frozen=True)
class ModelSwitch:
    """What `switch_model` committed: rows written under the new model, rows of the old model deleted."""

    source_model: str
    target_model: str
    written: int
    deleted: int
    vanished: int  # old faces deleted while re-embedding: not carried over


def source_faces(session: Session, model_id: str) -> list[SourceFace]:
    """Every face of `model_id` with its thumbnail, ascending id (one read transaction: one snapshot)."""
    stmt = (
        select(Face.id, Face.identity_id, Face.image_sha256, Face.x1, Face.y1, Face.x2, Face.y2,
               Face.detection_probability, Thumbnail.jpeg)
        .outerjoin(Thumbnail, Thumbnail.face_id == Face.id)
        .where(Face.model_id == model_id)
        .order_by(Face.id)
    )
    return [
        SourceFace(r.id, r.identity_id, r.image_sha256, (r.x1, r.y1, r.x2, r.y2), r.detection_probability,
                   bytes(r.jpeg) if r.jpeg is not None else None)
        for r in session.execute(stmt)
    ]


def count_model_faces(session: Session, model_id: str) -> int:
    return int(session.scalar(select(func.count()).select_from(Face).where(Face.model_id == model_id)) or 0)


def switch_model(
    session: Session,
    *,
    source_model: str,
    target_model: str,
    replacements: Mapping[int, NewFace],
    dropped: Sequence[int],
    actor: str,
) -> ModelSwitch:
    """Inside one write transaction: write `replacements` (old face id → the face under `target_model`) with the
    old rows' current identities, then delete every `source_model` row. `dropped`: old ids knowingly not carried
    over (they could not be re-embedded). Raises before any change when the gallery moved under us."""
    if source_model == target_model:
        raise InvalidRequest(f"the gallery is already embedded by {target_model!r}")
    if any(f.model_id != target_model for f in replacements.values()):
        raise InvalidRequest(f"every replacement face must be of model {target_model!r}")
    existing = count_model_faces(session, target_model)
    if existing:
        raise FailedPrecondition(
            f"the gallery already holds {existing} faces of {target_model!r}; a gallery never mixes model ids, so "
            "the switch would drop them: delete them (or restore a backup) before reindexing into that model"
        )
    current = dict(session.execute(select(Face.id, Face.identity_id).where(Face.model_id == source_model)).all())
    known = set(replacements) | set(dropped)
    added = sorted(set(current) - known)
    if added:
        raise FailedPrecondition(
            f"{len(added)} face(s) of {source_model!r} were added while the gallery was being re-embedded "
            f"(ids {added[:5]}{'...' if len(added) > 5 else ''}); nothing was changed: run the reindex again"
        )
    by_identity: dict[int | None, list[NewFace]] = {}
    for old_id, face in replacements.items():
        if old_id in current:
            by_identity.setdefault(current[old_id], []).append(face)
    written = 0
    for identity_id, faces in by_identity.items():
        written += len(_insert_faces(session, identity_id, faces))
    deleted = 0
    ids = sorted(current)
    for start in range(0, len(ids), _IN_CHUNK):
        # Thumbnails of the old rows go by ON DELETE CASCADE in the same statement.
        deleted += session.execute(delete(Face).where(Face.id.in_(ids[start : start + _IN_CHUNK]))).rowcount or 0
    vanished = len(set(replacements) - set(current))
    audit(session, actor, "gallery.reindex", target_model, {
        "source_model": source_model, "target_model": target_model, "faces_written": written,
        "faces_deleted": deleted, "faces_dropped": len(dropped), "faces_vanished": vanished,
    })
    return ModelSwitch(source_model, target_model, written, deleted, vanished)
